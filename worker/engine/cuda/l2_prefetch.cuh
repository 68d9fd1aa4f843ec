// Bulk L2 prefetches (cp.async.bulk.prefetch.L2): fire-and-forget copies from DRAM into L2 that a
// kernel issues for weights a later kernel will stream. Used where a latency-bound kernel leaves
// DRAM idle (the decode step's small kernels, docs/gpu.md "L2 look-ahead").
#pragma once

#include <cstdint>

#include "cuda/l2_ahead_plan.h"

namespace mq::cuda {

// Bulk prefetch of [p, p + bytes) into L2, split over the lanes of warp 0 (p and bytes are
// multiples of 16).
__device__ __forceinline__ void PrefetchL2(const uint8_t* p, int64_t bytes) {
  if (threadIdx.x >= 32 || bytes <= 0) return;
  int64_t off, n;
  hd::L2Piece(bytes, 32, threadIdx.x, &off, &n);
  if (n <= 0) return;
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p + off), "r"(static_cast<unsigned>(n)) : "memory");
}

// This block's share of a later kernel's weights (the grid's blocks, x then y, split the span).
// Issue it once the data the kernel waited for is there: before that the previous kernel is still
// streaming its own weights.
__device__ __forceinline__ void PrefetchAhead(const L2Span& s) {
  if (s.p == nullptr || s.bytes <= 0) return;
  int64_t off, n;
  hd::L2Piece(s.bytes, static_cast<int64_t>(gridDim.x) * gridDim.y, blockIdx.x + static_cast<int64_t>(gridDim.x) * blockIdx.y,
              &off, &n);
  if (n > 0) PrefetchL2(static_cast<const uint8_t*>(s.p) + off, n);
}

}  // namespace mq::cuda
