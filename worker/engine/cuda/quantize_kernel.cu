// After x_proj: one warp per token turns δ|B|C into float (B and C feed the scan) and prepares δ
// for dt_proj: half (FP16 path) or per-token INT8 (INT8 path), rows zero-padded to ld.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kWarps = 8;

template <ActKind kIn, bool kQuant>
__global__ void __launch_bounds__(kWarps * 32) XProjPostKernel(XProjPostParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + (threadIdx.x >> 5);
  if (t >= p.tokens) return;
  const int64_t cols = p.R + 2 * p.N;
  float amax = 0.0f;
  for (int64_t c = lane; c < cols; c += 32) {
    const float v = LoadAct<kIn>(p.in, t, c);
    p.dbc[t * cols + c] = v;
    if (c < p.R) amax = fmaxf(amax, fabsf(v));
  }
  if constexpr (kQuant) {
    amax = WarpMax(amax);
    const float s = p.quant.static_scale > 0.0f ? p.quant.static_scale : hd::ScaleFromAbsMax(amax);
    const float inv = 1.0f / s;
    __syncwarp();  // dbc row written by this warp is re-read below
    for (int64_t c = lane; c < p.quant.ld; c += 32)
      p.quant.q[t * p.quant.ld + c] = c < p.R ? hd::QuantizeValue(p.dbc[t * cols + c], inv) : 0;
    if (lane == 0) p.quant.scale[t] = s;
  } else {
    __syncwarp();
    for (int64_t c = lane; c < p.ld_delta; c += 32)
      p.delta_f16[t * p.ld_delta + c] = __float2half_rn(c < p.R ? p.dbc[t * cols + c] : 0.0f);
  }
}

template <ActKind kIn, bool kQuant>
Status Launch(const XProjPostParams& p, cudaStream_t stream) {
  XProjPostKernel<kIn, kQuant><<<static_cast<unsigned>((p.tokens + kWarps - 1) / kWarps), kWarps * 32, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("XProjPostKernel");
  return OkStatus();
}

}  // namespace

Status LaunchXProjPost(const XProjPostParams& p, cudaStream_t stream) {
  if (p.tokens <= 0) return OkStatus();
  if (p.in.kind == ActKind::kF16 && p.delta_f16 != nullptr) return Launch<ActKind::kF16, false>(p, stream);
  if (p.in.kind == ActKind::kInt32Acc && p.quant.q != nullptr) return Launch<ActKind::kInt32Acc, true>(p, stream);
  return InvalidArgumentError("XProjPost: supported are half in/half δ and INT8 accumulators in/INT8 δ");
}

}  // namespace mq::cuda
