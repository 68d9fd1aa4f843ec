// The decode step's L2 look-ahead (CudaModelOptions::decode_l2_ahead_mb): which later weights a
// latency-bound kernel prefetches into L2, and how a grid splits such a span. Shared by the host
// (cuda_mamba_model.cu), the kernels (l2_prefetch.cuh) and the CPU twin
// (tests/engine/cuda_l2_ahead_twin_test.cc). Plain C++ when not under nvcc.
//
// Why: at small batches the x_proj, scan and Hadamard kernels of a layer are latency-bound and
// leave DRAM idle for most of the layer, while in_proj and out_proj stream 39 MB (2.8b INT8) at
// the layer's two ends. Prefetched during the small kernels, those weights are read from L2.
#pragma once

#include <cstdint>

#include "cuda/hd_math.h"

namespace mq::cuda {

// Bytes of a later kernel's weights to prefetch into L2; p and bytes are multiples of 16.
struct L2Span {
  const void* p = nullptr;
  int64_t bytes = 0;
};

namespace hd {

// What one decode layer prefetches: `x` (issued by the kernel after in_proj: the layer kernels'
// x_proj, the per-stage conv step) and `scan` (by the scan kernel).
struct L2AheadSpans {
  L2Span x, scan;
};

// out_proj: this layer's out_proj weights; next: the next linear's (the next layer's in_proj, after
// the last layer the LM head). The budget goes to out_proj first (it is read first), the rest to a
// prefix of `next`; every span is a 16-byte multiple (cp.async.bulk's unit), empty spans are null.
inline L2AheadSpans PlanL2Ahead(L2Span out_proj, L2Span next, int64_t budget) {
  L2AheadSpans s;
  if (budget <= 0) return s;
  const int64_t out_bytes = (out_proj.p == nullptr ? 0 : std::min(budget, out_proj.bytes)) / 16 * 16;
  if (out_bytes > 0) s.x = L2Span{out_proj.p, out_bytes};
  const int64_t next_bytes = (next.p == nullptr ? 0 : std::min(next.bytes, budget - out_bytes)) / 16 * 16;
  if (next_bytes > 0) s.scan = L2Span{next.p, next_bytes};
  return s;
}

// Piece `part` of `parts` of [0, bytes): offset and size (≤ 0: none), 16-byte multiples, in order,
// covering the range once. A grid splits a span over its blocks, a block over its warp-0 lanes.
MQ_HD void L2Piece(int64_t bytes, int64_t parts, int64_t part, int64_t* off, int64_t* n) {
  const int64_t piece = ((bytes + parts - 1) / parts + 15) / 16 * 16;
  *off = part * piece;
  *n = *off >= bytes ? 0 : (bytes - *off < piece ? bytes - *off : piece);
}

}  // namespace hd
}  // namespace mq::cuda
