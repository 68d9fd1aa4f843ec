// Online randomized Hadamard (R2 before out_proj) fused with per-token INT8 quantization:
//   x ← x·H̃, H̃ = D·(H_m ⊗ H_p)/√n:  scale by D/√n, radix-2 Walsh–Hadamard butterflies over each
//   contiguous chunk of p = 2^k values, then the m×m ±1 mix across chunks (quant/hadamard.h).
// One block per token, the row in shared memory; the arithmetic is the CPU transform's, addition
// for addition (hd_math.h), so the INT8 codes match the CPU's on the same input.
#include <algorithm>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kMaxThreads = 1024;
constexpr int kMaxM = 28;

__global__ void __launch_bounds__(kMaxThreads) HadamardQuantKernel(HadamardQuantParams p, int log2_half) {
  extern __shared__ float smem[];
  float* sx = smem;              // [n]
  float* sy = smem + p.n;        // [n]
  __shared__ int8_t s_mix[kMaxM * kMaxM];
  __shared__ float fscratch[32];
  const int64_t t = blockIdx.x;
  const int n = static_cast<int>(p.n), pp = static_cast<int>(p.p), m = p.m;
  const float* x = p.x + t * p.n;
  for (int i = threadIdx.x; i < m * m; i += blockDim.x) s_mix[i] = p.mix != nullptr ? p.mix[i] : 1;
  if (p.scale != nullptr) {
#pragma unroll 4
    for (int i = threadIdx.x; i < n; i += blockDim.x) sx[i] = x[i] * p.scale[i];
  } else {
    for (int i = threadIdx.x; i < n; i += blockDim.x) sx[i] = x[i];
  }
  __syncthreads();
  const float* result = sx;
  if (p.scale != nullptr) {
    for (int h = 1; h < pp; h <<= 1) {
      for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
        const int lo = hd::ButterflyLow(i, h, pp, log2_half);
        const float a = sx[lo], b = sx[lo + h];
        sx[lo] = a + b;
        sx[lo + h] = a - b;
      }
      __syncthreads();
    }
    if (m > 1) {
#pragma unroll 4
      for (int i = threadIdx.x; i < n; i += blockDim.x) sy[i] = hd::MixOutput(sx, s_mix, m, pp, i / pp, i % pp);
      __syncthreads();
      result = sy;
    }
  }
  float amax = 0.0f;
  for (int i = threadIdx.x; i < n; i += blockDim.x) amax = fmaxf(amax, fabsf(result[i]));
  amax = BlockMax(amax, fscratch);
  QuantizeRow(result, p.n, amax, p.quant, t);
}

}  // namespace

Status LaunchHadamardQuant(const HadamardQuantParams& p, cudaStream_t stream) {
  if (p.tokens <= 0) return OkStatus();
  if (p.scale != nullptr) {
    if (p.m < 1 || p.m > kMaxM || p.p < 1 || (p.p & (p.p - 1)) != 0 || p.m * p.p != p.n)
      return InvalidArgumentError("HadamardQuant: n must be m·2^k with m ≤ 28");
    if (p.m > 1 && p.mix == nullptr) return InvalidArgumentError("HadamardQuant: missing mix matrix");
  }
  const size_t smem = 2 * static_cast<size_t>(p.n) * sizeof(float);
  static bool attr_set = false;  // raise the dynamic limit once (up to n = 24k floats)
  if (!attr_set) {
    MQ_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(HadamardQuantKernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                 192 * 1024));
    attr_set = true;
  }
  if (smem > 192 * 1024) return InvalidArgumentError("HadamardQuant: row too long");
  int log2_half = 0;
  while ((int64_t{2} << log2_half) < p.p) ++log2_half;  // p/2 = 2^log2_half (p ≥ 2)
  const int threads = p.tokens > 64 ? 512 : RowKernelThreads(p.tokens, p.n);
  HadamardQuantKernel<<<static_cast<unsigned>(p.tokens), threads, smem, stream>>>(p, log2_half);
  MQ_CUDA_CHECK_LAUNCH("HadamardQuantKernel");
  return OkStatus();
}

}  // namespace mq::cuda
