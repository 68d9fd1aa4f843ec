// Next-token selection on the device for the decode loop (no host round trip per step): one block
// per row finds the arg max (lowest index among equal maxima, like std::max_element) or, with a
// temperature, samples as eval/sampling_math.h defines (the threshold searches run as block-wide
// counts and sums); then eos/pad bookkeeping, the next step's input ids and the output. The last
// block to finish advances the step counter.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"
#include "eval/sampling.h"
#include "eval/sampling_math.h"

namespace mq::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ bool Better(float v, int64_t i, float bv, int64_t bi) {
  return v > bv || (v == bv && i < bi);
}

// The sampled token of one row (all threads return it).
__device__ int32_t SampleRow(const GreedyParams& p, const float* row, float m, int32_t arg, int64_t b, int32_t step,
                             double* dscr) {
  const int64_t V = p.V;
  uint32_t kkey = 0;
  if (p.sampling.top_k > 0 && p.sampling.top_k < V) {
    kkey = sampling::LargestKey(
        [&](uint32_t k) {
          double n = 0;
          for (int64_t i = threadIdx.x; i < V; i += blockDim.x) n += sampling::OrderedKey(row[i]) >= k ? 1.0 : 0.0;
          return BlockSum(n, dscr);
        },
        static_cast<double>(p.sampling.top_k));
  }
  auto weight = [&](int64_t i) {
    return sampling::OrderedKey(row[i]) >= kkey ? sampling::Weight(row[i], m, p.sampling.temperature) : 0.0f;
  };
  double total = 0;
  for (int64_t i = threadIdx.x; i < V; i += blockDim.x) total += weight(i);
  total = BlockSum(total, dscr);
  uint32_t tau = 0;
  if (p.sampling.top_p < 1.0f) {
    tau = sampling::LargestKey(
        [&](uint32_t t) {
          double s = 0;
          for (int64_t i = threadIdx.x; i < V; i += blockDim.x) {
            const float w = weight(i);
            if (FloatBits(w) >= t) s += w;
          }
          return BlockSum(s, dscr);
        },
        static_cast<double>(p.sampling.top_p) * total);
  }
  auto nucleus = [&](int64_t i) {
    const float w = weight(i);
    return (w > 0.0f && FloatBits(w) >= tau) ? w : 0.0f;
  };
  // Contiguous chunks a thread, running sums in index order: the thread whose chunk holds the
  // target walks it like the CPU's loop.
  const int64_t chunk = (V + blockDim.x - 1) / blockDim.x;
  const int64_t c0 = threadIdx.x * chunk, c1 = c0 + chunk < V ? c0 + chunk : V;
  double local = 0;
  int64_t last = -1;
  for (int64_t i = c0; i < c1; ++i) {
    const float w = nucleus(i);
    if (w > 0.0f) local += w, last = i;
  }
  __shared__ double s_part[kThreads];
  __shared__ int32_t s_pick, s_last;
  s_part[threadIdx.x] = local;
  if (threadIdx.x == 0) s_pick = static_cast<int32_t>(V), s_last = arg;
  __syncthreads();
  double prefix = 0, all = 0;
  for (int t = 0; t < static_cast<int>(blockDim.x); ++t) {  // same order in every thread
    if (t == static_cast<int>(threadIdx.x)) prefix = all;
    all += s_part[t];
  }
  if (last >= 0) atomicMax(&s_last, static_cast<int32_t>(last));
  const double target = sampling::Uniform(p.sampling.seed, static_cast<uint64_t>(b), static_cast<uint64_t>(step)) * all;
  if (local > 0 && prefix <= target && target < prefix + local) {
    double run = prefix;
    for (int64_t i = c0; i < c1; ++i) {
      const float w = nucleus(i);
      if (w <= 0.0f) continue;
      run += w;
      if (run > target) {
        atomicMin(&s_pick, static_cast<int32_t>(i));
        break;
      }
    }
  }
  __syncthreads();
  return s_pick < V ? s_pick : s_last;  // rounding left the target at the very end
}

__global__ void __launch_bounds__(kThreads) GreedyKernel(GreedyParams p, unsigned int* done_counter) {
  __shared__ float s_v[32];
  __shared__ int64_t s_i[32];
  __shared__ double dscr[32];
  __shared__ float s_max;
  __shared__ int32_t s_arg;
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
    if (lane == 0) s_max = bv, s_arg = static_cast<int32_t>(bi < p.V ? bi : 0);  // all-NaN row: token 0
  }
  __syncthreads();
  const int32_t step = *p.step;
  int32_t tok = s_arg;
  if (p.sampling.temperature > 0.0f) tok = SampleRow(p, row, s_max, s_arg, b, step, dscr);
  if (threadIdx.x == 0) {
    const int32_t next = p.finished[b] ? p.pad_id : tok;
    p.next_ids[b] = next;
    if (step < p.max_steps) p.out[static_cast<int64_t>(step) * p.batch + b] = next;
    if (tok == p.eos_id) p.finished[b] = 1;
    __threadfence();
    const unsigned int prev = atomicAdd(done_counter, 1u);
    if (prev + 1 == static_cast<unsigned int>(p.batch)) {  // last row of this step
      *done_counter = 0;
      *p.step = step + 1;
    }
  }
}

}  // namespace

Status LaunchGreedy(const GreedyParams& p, cudaStream_t stream) {
  if (p.batch <= 0) return OkStatus();
  MQ_RETURN_IF_ERROR(ValidateSampling(p.sampling));
  // The completion counter lives right after the step counter (the caller allocates 2 ints).
  GreedyKernel<<<static_cast<unsigned>(p.batch), kThreads, 0, stream>>>(p, reinterpret_cast<unsigned int*>(p.step + 1));
  MQ_CUDA_CHECK_LAUNCH("GreedyKernel");
  return OkStatus();
}

}  // namespace mq::cuda
