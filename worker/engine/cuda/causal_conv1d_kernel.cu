// Depthwise causal conv1d + SiLU over each sequence, continuing from the conv state (the last
// K−1 inputs, oldest first), for prefill (L > 1) and the one-step decode update (L = 1).
// One block per token: the INT8 path quantizes u per token in the same kernel (the absmax needs
// every channel of the token), so x_proj reads INT8 directly.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kMaxK = 8;

template <ActKind kIn, bool kQuant>
__global__ void __launch_bounds__(kMaxThreads) CausalConvKernel(CausalConvParams p) {
  extern __shared__ float urow[];  // [E] (INT8 path)
  __shared__ float fscratch[32];
  const int64_t t = blockIdx.x;  // token row b·L + l
  const int64_t b = t / p.seqlen, l = t % p.seqlen;
  const int64_t S = p.K - 1;
  const int32_t slot = p.slot_ids[b];
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < p.E; c += blockDim.x) {
    float* st = p.conv_state + slot * p.slot_stride + c * S;
    const float* w = p.weight + c * p.K;
    float acc = p.bias[c];
    float window[kMaxK];
#pragma unroll
    for (int k = 0; k < kMaxK; ++k) {
      if (k < p.K) {
        const int64_t i = l + k;  // index into [state (S), inputs (L)]
        window[k] = i < S ? st[i] : LoadAct<kIn>(p.u0, b * p.seqlen + (i - S), c);
        acc += w[k] * window[k];
      }
    }
    const float u = hd::Silu(acc);
    if (p.seqlen == 1) {  // decode: shift the state in place (this thread owns (slot, c))
#pragma unroll
      for (int s = 0; s < kMaxK - 1; ++s)
        if (s < S) st[s] = window[s + 1];
    }
    if constexpr (kQuant) {
      p.out_f32[t * p.E + c] = u;
      urow[c] = u;
      amax = fmaxf(amax, fabsf(u));
    } else {
      p.out_f16[t * p.E + c] = __float2half_rn(u);
    }
  }
  if constexpr (kQuant) {
    if (p.quant.q != nullptr) {
      amax = BlockMax(amax, fscratch);
      QuantizeRow(urow, p.E, amax, p.quant, t);
    }
  }
}

// Prefill: the new state is the last K−1 entries of [old state, inputs]. One thread per (b, c);
// ascending s reads index L + s > s, so the in-place update never reads an entry it wrote.
template <ActKind kIn>
__global__ void ConvStateUpdateKernel(CausalConvParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.batch * p.E) return;
  const int64_t b = i / p.E, c = i % p.E;
  const int64_t S = p.K - 1;
  float* st = p.conv_state + p.slot_ids[b] * p.slot_stride + c * S;
  for (int64_t s = 0; s < S; ++s) {
    const int64_t idx = p.seqlen + s;
    st[s] = idx < S ? st[idx] : LoadAct<kIn>(p.u0, b * p.seqlen + (idx - S), c);
  }
}

template <ActKind kIn, bool kQuant>
Status Launch(const CausalConvParams& p, cudaStream_t stream) {
  const int64_t T = p.batch * p.seqlen;
  const size_t smem = kQuant ? static_cast<size_t>(p.E) * sizeof(float) : 0;
  if (smem > 48 * 1024) return InvalidArgumentError("CausalConv: d_inner too large for one block");
  CausalConvKernel<kIn, kQuant><<<static_cast<unsigned>(T), RowKernelThreads(T, p.E), smem, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("CausalConvKernel");
  if (p.seqlen > 1) {
    const int64_t n = p.batch * p.E;
    ConvStateUpdateKernel<kIn><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
    MQ_CUDA_CHECK_LAUNCH("ConvStateUpdateKernel");
  }
  return OkStatus();
}

}  // namespace

Status LaunchCausalConv(const CausalConvParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.seqlen <= 0) return OkStatus();
  if (p.K < 2 || p.K > kMaxK) return InvalidArgumentError("CausalConv: conv kernel size must be in [2, 8]");
  if (p.u0.kind == ActKind::kF16 && p.out_f16 != nullptr) return Launch<ActKind::kF16, false>(p, stream);
  if (p.u0.kind == ActKind::kInt32Acc && p.out_f32 != nullptr) return Launch<ActKind::kInt32Acc, true>(p, stream);
  return InvalidArgumentError("CausalConv: supported are half in/half out and INT8 accumulators in/float+INT8 out");
}

}  // namespace mq::cuda
