// The greedy token of every row of a [B, V] logits matrix on the device, so that a decode step
// whose sequences are all greedy copies B ids to the host instead of B·V floats. Same rule as the
// CPU's serve::GreedyToken: the lowest index holding the largest finite logit (NaN and ±inf count
// as −inf), −1 when a row has no finite logit. One block a row; comparisons only, so the result is
// exactly the CPU's on the same logits.
#include <cuda_runtime.h>

#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ bool Usable(float x) { return x > -INFINITY && x < INFINITY; }

// (v, i) beats (bv, bi): larger value, or equal value and lower index; an unset best (bi < 0) loses.
__device__ __forceinline__ bool Better(float v, int32_t i, float bv, int32_t bi) {
  if (i < 0) return false;
  if (bi < 0) return true;
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads) RowArgmaxKernel(const float* logits, int64_t V, int32_t* out) {
  const float* row = logits + blockIdx.x * V;
  float best = 0.0f;
  int32_t arg = -1;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
    const float x = row[i];
    if (Usable(x) && Better(x, static_cast<int32_t>(i), best, arg)) {
      best = x;
      arg = static_cast<int32_t>(i);
    }
  }
  __shared__ float sv[kThreads];
  __shared__ int32_t si[kThreads];
  sv[threadIdx.x] = best;
  si[threadIdx.x] = arg;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s && Better(sv[threadIdx.x + s], si[threadIdx.x + s], sv[threadIdx.x], si[threadIdx.x])) {
      sv[threadIdx.x] = sv[threadIdx.x + s];
      si[threadIdx.x] = si[threadIdx.x + s];
    }
    __syncthreads();
  }
  if (threadIdx.x == 0) out[blockIdx.x] = si[0];
}

}  // namespace

Status LaunchRowArgmax(const float* logits, int64_t B, int64_t V, int32_t* out, cudaStream_t stream) {
  if (logits == nullptr || out == nullptr || B < 1 || B > (1 << 20) || V < 1 || V > (int64_t{1} << 31))
    return InvalidArgumentError("row arg max: bad arguments");
  RowArgmaxKernel<<<static_cast<unsigned>(B), kThreads, 0, stream>>>(logits, V, out);
  MQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());
  return OkStatus();
}

}  // namespace mq::cuda
