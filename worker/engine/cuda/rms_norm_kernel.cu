// Fused residual add + RMSNorm (+ per-token INT8 quantization or half output), one block per row:
//   h ← h + residual (float32, written back),  y = γ ⊙ h / sqrt(mean(h²) + eps)
// The sum of squares runs in double like the CPU reference, so y matches it closely enough that
// the INT8 codes are identical on the same h.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kMaxThreads = 1024;

template <ActKind kRes, bool kQuant>
__global__ void __launch_bounds__(kMaxThreads) ResidualNormKernel(ResidualNormParams p) {
  extern __shared__ float y[];  // [d] normalized row (INT8 output only)
  __shared__ double dscratch[32];
  __shared__ float fscratch[32];
  const int64_t r = blockIdx.x;
  const int64_t t = r * p.row_stride + p.row_offset;
  float* h = p.h + t * p.d;
  double ss = 0.0;
  for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x) {
    float v = h[c];
    if constexpr (kRes != ActKind::kNone) {
      v += LoadAct<kRes>(p.residual, t, c);
      h[c] = v;
    }
    ss += static_cast<double>(v) * v;
  }
  ss = BlockSum(ss, dscratch);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(p.d) + static_cast<double>(p.eps)));
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x) {
    const float v = p.gamma[c] * (h[c] * inv);
    if constexpr (kQuant) {
      y[c] = v;
      amax = fmaxf(amax, fabsf(v));
    } else {
      p.out_f16[r * p.ld_out + c] = __float2half_rn(v);
    }
  }
  if constexpr (kQuant) {
    amax = BlockMax(amax, fscratch);  // includes the barrier that publishes y
    QuantizeRow(y, p.d, amax, p.quant, r);
  } else {
    for (int64_t c = p.d + threadIdx.x; c < p.ld_out; c += blockDim.x) p.out_f16[r * p.ld_out + c] = __float2half_rn(0.0f);
  }
}

template <ActKind kRes>
Status Launch(const ResidualNormParams& p, cudaStream_t stream) {
  const int threads = RowKernelThreads(p.rows, p.d);
  if (p.out_f16 != nullptr) {
    ResidualNormKernel<kRes, false><<<static_cast<unsigned>(p.rows), threads, 0, stream>>>(p);
  } else {
    const size_t smem = static_cast<size_t>(p.d) * sizeof(float);
    if (smem > 48 * 1024) return InvalidArgumentError("ResidualNorm: hidden size too large for one block");
    ResidualNormKernel<kRes, true><<<static_cast<unsigned>(p.rows), threads, smem, stream>>>(p);
  }
  MQ_CUDA_CHECK_LAUNCH("ResidualNormKernel");
  return OkStatus();
}

}  // namespace

Status LaunchResidualNorm(const ResidualNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return OkStatus();
  if (p.out_f16 == nullptr && p.quant.q == nullptr) return InvalidArgumentError("ResidualNorm: no output");
  switch (p.residual.kind) {
    case ActKind::kNone: return Launch<ActKind::kNone>(p, stream);
    case ActKind::kF32: return Launch<ActKind::kF32>(p, stream);
    case ActKind::kInt32Acc: return Launch<ActKind::kInt32Acc>(p, stream);
    default: return InvalidArgumentError("ResidualNorm: unsupported residual kind");
  }
}

}  // namespace mq::cuda
