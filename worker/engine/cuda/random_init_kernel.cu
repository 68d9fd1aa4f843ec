// Device-side random initialization for benchmark models of real Mamba shapes (generating
// billions of parameters on the host would dominate the run). A counter-based hash (splitmix64)
// makes every element depend on (seed, index) only.
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

__device__ __forceinline__ uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
__device__ __forceinline__ float Uniform01(uint64_t seed, int64_t i) {
  return static_cast<float>(SplitMix(seed * 0x100000001b3ull + static_cast<uint64_t>(i)) >> 40) * (1.0f / 16777216.0f);
}

__global__ void FillF32(float* x, int64_t n, float lo, float hi, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x)
    x[i] = lo + (hi - lo) * Uniform01(seed, i);
}
__global__ void FillF16(__half* x, int64_t rows, int64_t cols, int64_t ld, float lo, float hi, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * ld; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % ld;
    x[i] = __float2half_rn(c < cols ? lo + (hi - lo) * Uniform01(seed, i) : 0.0f);
  }
}
__global__ void FillI8(int8_t* x, int64_t rows, int64_t cols, int64_t ld, int lo, int hi, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * ld; i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = i % ld;
    const int span = hi - lo + 1;
    x[i] = c < cols ? static_cast<int8_t>(lo + min(span - 1, static_cast<int>(Uniform01(seed, i) * span))) : 0;
  }
}
__global__ void FillConst(float* x, int64_t n, float v) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < n; i += int64_t{gridDim.x} * blockDim.x) x[i] = v;
}

unsigned Blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536)); }

}  // namespace

Status LaunchFillUniformF32(float* x, int64_t n, float lo, float hi, uint64_t seed, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  FillF32<<<Blocks(n), 256, 0, stream>>>(x, n, lo, hi, seed);
  MQ_CUDA_CHECK_LAUNCH("FillF32");
  return OkStatus();
}
Status LaunchFillUniformF16(__half* x, int64_t rows, int64_t cols, int64_t ld, float lo, float hi, uint64_t seed,
                            cudaStream_t stream) {
  if (rows * ld <= 0) return OkStatus();
  FillF16<<<Blocks(rows * ld), 256, 0, stream>>>(x, rows, cols, ld, lo, hi, seed);
  MQ_CUDA_CHECK_LAUNCH("FillF16");
  return OkStatus();
}
Status LaunchFillUniformI8(int8_t* x, int64_t rows, int64_t cols, int64_t ld, int lo, int hi, uint64_t seed,
                           cudaStream_t stream) {
  if (rows * ld <= 0) return OkStatus();
  FillI8<<<Blocks(rows * ld), 256, 0, stream>>>(x, rows, cols, ld, lo, hi, seed);
  MQ_CUDA_CHECK_LAUNCH("FillI8");
  return OkStatus();
}
Status LaunchFillConstantF32(float* x, int64_t n, float value, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  FillConst<<<Blocks(n), 256, 0, stream>>>(x, n, value);
  MQ_CUDA_CHECK_LAUNCH("FillConst");
  return OkStatus();
}

}  // namespace mq::cuda
