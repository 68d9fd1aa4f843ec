// Scalar pieces of token sampling shared by the CPU reference (eval/sampling.cc) and the GPU
// kernel (cuda/greedy_kernel.cu): the counter-based random number and the order-preserving keys
// the threshold searches run on. Plain C++ when not under nvcc.
//
// Sampling semantics (both backends): with temperature T > 0, the candidates are the tokens whose
// logit is at least the k-th largest logit (all tokens when top_k is 0 or ≥ V; ties at the k-th
// value are all in); weights w = exp((logit − max) / T); the nucleus is the set {w ≥ τ} for the
// largest τ whose set holds at least top_p of the candidates' mass; the token is the first index
// (ascending) at which the running sum of nucleus weights exceeds u · (nucleus mass), u the
// uniform number of (seed, sequence, step). T = 0 is greedy (lowest index among equal maxima).
#pragma once

#include <cstdint>

#include "model/float_bits.h"

#if defined(__CUDACC__)
#define MQ_SAMPLING_HD __host__ __device__ __forceinline__
#else
#define MQ_SAMPLING_HD inline
#endif

namespace mq::sampling {

// Philox4x32-10 (Salmon et al., SC'11): counter (step, sequence), key seed; first output word.
MQ_SAMPLING_HD uint32_t Philox(uint64_t seed, uint64_t sequence, uint64_t step) {
  uint32_t c0 = static_cast<uint32_t>(step), c1 = static_cast<uint32_t>(step >> 32);
  uint32_t c2 = static_cast<uint32_t>(sequence), c3 = static_cast<uint32_t>(sequence >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c0;
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c2;
    const uint32_t n0 = static_cast<uint32_t>(p1 >> 32) ^ c1 ^ k0;
    const uint32_t n2 = static_cast<uint32_t>(p0 >> 32) ^ c3 ^ k1;
    c1 = static_cast<uint32_t>(p1);
    c3 = static_cast<uint32_t>(p0);
    c0 = n0;
    c2 = n2;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c0;
}
// Uniform in [0, 1) with 24 random bits (exactly representable in float and double).
MQ_SAMPLING_HD double Uniform(uint64_t seed, uint64_t sequence, uint64_t step) {
  return static_cast<double>(Philox(seed, sequence, step) >> 8) * (1.0 / 16777216.0);
}

// A float's bits (model/float_bits.h FloatBits) order like the values for non-negative floats (the
// weights); for any float, this maps them to an unsigned key with the same order (−0 and +0 differ;
// NaN sorts high).
MQ_SAMPLING_HD uint32_t OrderedKey(float x) {
  const uint32_t b = FloatBits(x);
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

// Largest 32-bit key K with measure(K) ≥ need, for a measure that does not increase with K (a count
// or a mass of the values whose key is ≥ K): binary search over the whole key space. The GPU kernel
// runs it with block-wide measures, every thread taking the same branches.
template <typename Measure>
MQ_SAMPLING_HD uint32_t LargestKey(Measure measure, double need) {
  uint32_t lo = 0, hi = 0xFFFFFFFFu;
  while (lo < hi) {
    const uint32_t mid = lo + static_cast<uint32_t>((static_cast<uint64_t>(hi) - lo + 1) / 2);
    if (measure(mid) >= need) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

// Weight of a candidate: exp((logit − max) / T) in float (expf on both sides).
MQ_SAMPLING_HD float Weight(float logit, float max_logit, float temperature) {
  return expf((logit - max_logit) / temperature);
}

}  // namespace mq::sampling
