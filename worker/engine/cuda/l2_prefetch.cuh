// Bulk L2 prefetches (cp.async.bulk.prefetch.L2): fire-and-forget copies from DRAM into L2 that a
// kernel issues for weights a later kernel will stream. Used where a latency-bound kernel leaves
// DRAM idle (the decode step's small kernels, docs/benchmarks.md "L2 look-ahead").
#pragma once

#include <cstdint>

#include "cuda/kernel_params.h"

namespace mq::cuda {

// Bulk prefetch of [p, p + bytes) into L2, split over the lanes of warp 0 (p and bytes are
// multiples of 16).
__device__ __forceinline__ void PrefetchL2(const uint8_t* p, int64_t bytes) {
  if (threadIdx.x >= 32 || bytes <= 0) return;
  const int64_t piece = ((bytes + 31) / 32 + 15) / 16 * 16;
  const int64_t off = static_cast<int64_t>(threadIdx.x) * piece;
  if (off >= bytes) return;
  const unsigned n = static_cast<unsigned>(bytes - off < piece ? bytes - off : piece);
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(n) : "memory");
}

// This block's share of a later kernel's weights (the grid's blocks, x then y, split the span in
// 16-byte multiples). Issue it once the data the kernel waited for is there: before that the
// previous kernel is still streaming its own weights.
__device__ __forceinline__ void PrefetchAhead(const L2Span& s) {
  if (s.p == nullptr || s.bytes <= 0) return;
  const int64_t blocks = static_cast<int64_t>(gridDim.x) * gridDim.y;
  const int64_t block = blockIdx.x + static_cast<int64_t>(gridDim.x) * blockIdx.y;
  const int64_t share = ((s.bytes + blocks - 1) / blocks + 15) / 16 * 16;
  const int64_t off = block * share;
  if (off >= s.bytes) return;
  PrefetchL2(static_cast<const uint8_t*>(s.p) + off, s.bytes - off < share ? s.bytes - off : share);
}

}  // namespace mq::cuda
