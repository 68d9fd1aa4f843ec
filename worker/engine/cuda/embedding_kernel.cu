// Token embedding gather into the float32 residual stream: h[t] = table[ids[t]].
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

__global__ void EmbeddingKernel(EmbeddingParams p) {
  const int64_t t = blockIdx.x;
  const float* src = p.table + static_cast<int64_t>(p.ids[t]) * p.d;
  float* dst = p.h + t * p.d;
  for (int64_t c = threadIdx.x; c < p.d; c += blockDim.x) dst[c] = src[c];
}

}  // namespace

Status LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream) {
  if (p.tokens <= 0) return OkStatus();
  EmbeddingKernel<<<static_cast<unsigned>(p.tokens), 256, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("EmbeddingKernel");
  return OkStatus();
}

}  // namespace mq::cuda
