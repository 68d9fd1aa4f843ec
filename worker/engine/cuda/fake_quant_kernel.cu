// Scope `full`: the conv input of each token is INT8 fake-quantized (q·s, s = max|x_t|/127) before
// the convolution, one block a token, with the CPU's arithmetic (FakeQuantRows divides by s).
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

template <ActKind kIn>
__global__ void FakeQuantRowsKernel(FakeQuantRowsParams p) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
    const float v = LoadAct<kIn>(p.x, t, c);
    p.out[t * p.cols + c] = v;
    amax = fmaxf(amax, fabsf(v));
  }
  amax = BlockMax(amax, scratch);
  if (amax == 0.0f) return;  // an all-zero row stays as it is
  const float s = amax / 127.0f;
  // Each thread re-reads only the elements it wrote.
  for (int64_t c = threadIdx.x; c < p.cols; c += blockDim.x) {
    float& v = p.out[t * p.cols + c];
    v = fminf(fmaxf(rintf(v / s), -127.0f), 127.0f) * s;
  }
}

}  // namespace

Status LaunchFakeQuantRows(const FakeQuantRowsParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return OkStatus();
  if (p.rows > 0x7fffffff) return InvalidArgumentError("FakeQuantRows: too many rows");
  const int threads = RowKernelThreads(p.rows, p.cols);
  switch (p.x.kind) {
    case ActKind::kInt32Acc:
      FakeQuantRowsKernel<ActKind::kInt32Acc><<<static_cast<unsigned>(p.rows), threads, 0, stream>>>(p);
      break;
    case ActKind::kF32:
      FakeQuantRowsKernel<ActKind::kF32><<<static_cast<unsigned>(p.rows), threads, 0, stream>>>(p);
      break;
    default:
      return InvalidArgumentError("FakeQuantRows: input must be INT8 accumulators or float");
  }
  MQ_CUDA_CHECK_LAUNCH("FakeQuantRowsKernel");
  return OkStatus();
}

}  // namespace mq::cuda
