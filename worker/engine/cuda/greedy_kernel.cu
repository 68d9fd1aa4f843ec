// Greedy next-token selection on the device for the decode loop (no host round trip per step):
// one block per row finds the arg max (lowest index among equal maxima, like std::max_element),
// applies eos/pad bookkeeping, writes the next step's input ids and appends to the output. The
// last block to finish advances the step counter.
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

__global__ void __launch_bounds__(kThreads) GreedyKernel(GreedyParams p, unsigned int* done_counter) {
  __shared__ float s_v[32];
  __shared__ int64_t s_i[32];
  const int64_t b = blockIdx.x;
  const float* row = p.logits + b * p.V;
  float bv = -INFINITY;
  int64_t bi = p.V;
  for (int64_t i = threadIdx.x; i < p.V; i += blockDim.x) {
    const float v = row[i];
    if (Better(v, i, bv, bi)) bv = v, bi = i;
  }
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
    if (Better(ov, oi, bv, bi)) bv = ov, bi = oi;
  }
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) s_v[warp] = bv, s_i[warp] = bi;
  __syncthreads();
  if (warp == 0) {
    bv = lane < (blockDim.x >> 5) ? s_v[lane] : -INFINITY;
    bi = lane < (blockDim.x >> 5) ? s_i[lane] : p.V;
    for (int o = 16; o > 0; o >>= 1) {
      const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
      const int64_t oi = __shfl_xor_sync(0xffffffffu, bi, o);
      if (Better(ov, oi, bv, bi)) bv = ov, bi = oi;
    }
    if (lane == 0) {
      const int32_t arg = static_cast<int32_t>(bi < p.V ? bi : 0);  // all-NaN row: token 0
      const int32_t step = *p.step;
      const int32_t next = p.finished[b] ? p.pad_id : arg;
      p.next_ids[b] = next;
      if (step < p.max_steps) p.out[static_cast<int64_t>(step) * p.batch + b] = next;
      if (arg == p.eos_id) p.finished[b] = 1;
      __threadfence();
      const unsigned int prev = atomicAdd(done_counter, 1u);
      if (prev + 1 == static_cast<unsigned int>(p.batch)) {  // last row of this step
        *done_counter = 0;
        *p.step = step + 1;
      }
    }
  }
}

}  // namespace

Status LaunchGreedy(const GreedyParams& p, cudaStream_t stream) {
  if (p.batch <= 0) return OkStatus();
  // The completion counter lives right after the step counter (the caller allocates 2 ints).
  GreedyKernel<<<static_cast<unsigned>(p.batch), kThreads, 0, stream>>>(p, reinterpret_cast<unsigned int*>(p.step + 1));
  MQ_CUDA_CHECK_LAUNCH("GreedyKernel");
  return OkStatus();
}

}  // namespace mq::cuda
