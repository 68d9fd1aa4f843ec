// The scan of scope `full` (INT8 path): per time step the state h (16 values a channel) is
// rotated by R4 online (h·R4, the transpose folded into x_proj's C rows), then y = h·C is an exact
// int32 product of h quantized per (step, channel) and C quantized per step — the arithmetic of the
// CPU's ScanStepwise. One thread a (sequence, channel) keeps the whole state in registers, so the
// per-channel scale needs no communication; this path favours clarity over the chunked staging of
// selective_scan_kernel.cu (scope `full` is the paper's evaluation setting, not the serving default).
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kN = 16;
constexpr int kThreads = 128;

__global__ void __launch_bounds__(kThreads) SelectiveScanStepwiseKernel(SelectiveScanParams p) {
  __shared__ float rot[kN * kN];
  const bool rotate = p.state_rotation != nullptr, quantize = p.quantize_output_product;
  if (rotate)
    for (int i = threadIdx.x; i < kN * kN; i += kThreads) rot[i] = p.state_rotation[i];
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  const int64_t b = blockIdx.y;
  if (c >= p.E) return;
  const float* u = static_cast<const float*>(p.u);
  // The state row in the model's state dtype (model/state_dtype.h), int8 with its row scale.
  const int64_t slot = p.slot_ids[b], off = slot * p.slot_stride + c * kN;
  float* scale = state::HasScale(p.state_dtype) ? p.ssm_scale + slot * p.scale_slot_stride + c : nullptr;
  float h[kN], a2[kN];
  state::LoadRow(p.state_dtype, p.ssm_state, off, kN, scale != nullptr ? *scale : 1.0f, h);
#pragma unroll
  for (int n = 0; n < kN; ++n) a2[n] = p.A2[c * kN + n];
  const float dcoef = p.D[c];
  const float gs = p.gate_scale != nullptr ? p.gate_scale[c] : 0.0f;
  for (int64_t l = 0; l < p.seqlen; ++l) {
    const int64_t r = b * p.seqlen + l;
    const float dt = hd::Softplus(LoadAct<ActKind::kInt32Acc>(p.delta, r, c));  // bias included
    const float zr = LoadAct<ActKind::kInt32Acc>(p.z, r, c);
    const float gate = p.gate_scale != nullptr ? hd::SmoothSilu(zr, gs) : hd::Silu(zr);
    const float uu = u[r * p.E + c];
    const float* bc = p.dbc + r * p.dbc_ld + p.R;  // B | C of this step
    float bv[kN], cv[kN];
#pragma unroll
    for (int n = 0; n < kN; ++n) bv[n] = bc[n], cv[n] = bc[kN + n];
    hd::ScanStep<kN>(h, a2, dt, dt * uu, bv, cv);  // updates h (its plain h·C is not used here)
    const float yv = hd::StateOutputProduct<kN>(h, rotate ? rot : nullptr, cv, quantize);
    p.y_f32[r * p.E + c] = (yv + dcoef * uu) * gate;
  }
  state::StoreRow(p.state_dtype, h, kN, p.ssm_state, off, scale);
}

}  // namespace

Status LaunchSelectiveScanStepwise(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.seqlen <= 0) return OkStatus();
  if (p.N != kN) return UnimplementedError("SelectiveScan: the CUDA scan supports state_size 16 only");
  if (p.batch > 65535) return InvalidArgumentError("SelectiveScan: batch too large");
  if (p.delta.kind != ActKind::kInt32Acc || p.z.kind != ActKind::kInt32Acc || !p.u_f32 || p.y_f32 == nullptr)
    return InvalidArgumentError("SelectiveScan: the quantized output product and the state rotation (scope full) "
                                "run on the INT8 path only");
  const dim3 grid(static_cast<unsigned>((p.E + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  SelectiveScanStepwiseKernel<<<grid, kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("SelectiveScanStepwiseKernel");
  return OkStatus();
}

}  // namespace mq::cuda
