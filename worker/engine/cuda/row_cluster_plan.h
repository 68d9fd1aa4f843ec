// How the one-row-a-token kernels of a decode step (the R2 Hadamard + INT8, the conv step + INT8)
// spread a token's row over a thread-block cluster when there are few tokens. (Residual + RMSNorm
// was tried the same way and measured no faster on the H100 — 2.5k-wide rows, two cluster
// barriers for the sum of squares and the |max| — so it stays one block a row.)
//
// Why: with one block a token, a decode step of 64 tokens runs those kernels on 64 of the H100's
// 132 SMs, each block walking a 5,120-wide row alone (docs/benchmarks.md, "Decode at batch 64":
// conv 15 µs, Hadamard 13 µs a layer on 2.8b). A cluster of `ranks` blocks takes one token, each
// block a contiguous slice of the row; the per-token |max| of the INT8 scale and (for the
// Hadamard) the values its last stage mixes across slices are exchanged through distributed
// shared memory. Every output element is computed by the same expression in the same order as
// the one-block kernels and the CPU reference, so the codes are bit-identical; the CPU twin
// (tests/engine/cuda_twin_test.cc) runs this decomposition against the CPU transform.
// Plain C++ when not under nvcc.
#pragma once

#include <cstdint>

#include "cuda/hd_math.h"

namespace mq::cuda::hd {

constexpr int kRowClusterMaxRanks = 8;  // the portable cluster size

// The smallest rank count among `allowed` (ascending, a bitmask of powers of two ≤ 8) that gives
// every SM a block (tokens·ranks ≥ sms), else the largest allowed; 1 when the tokens alone fill
// the GPU.
MQ_HD int RowClusterRanks(int64_t tokens, int sms, unsigned allowed) {
  if (tokens <= 0 || sms <= 0 || tokens >= sms) return 1;
  int best = 1;
  for (int r = 2; r <= kRowClusterMaxRanks; r *= 2) {
    if ((allowed & static_cast<unsigned>(r)) == 0) continue;
    best = r;
    if (tokens * r >= sms) return r;
  }
  return best;
}

// ---- R2 Hadamard (n = m·p, p = 2^k) ------------------------------------------------------------
// Rank k owns elements [k·local, (k+1)·local) of the row. With m > 1 a rank owns m/ranks whole
// chunks: it runs every butterfly level of its chunks, then the m×m mix of its output chunks,
// gathering column j of all m chunks from their owners. With m = 1 a rank owns a p/ranks slice of
// the one chunk: it runs the levels h < p/ranks (segments of `seg` values), then the log2(ranks)
// levels that pair slices, gathering position j of every slice (HadamardCrossLevels).
struct HadamardClusterPlan {
  int ranks = 1;
  int64_t local = 0;  // elements a rank owns
  int64_t seg = 0;    // the length of the segments its local levels run over
};
MQ_HD HadamardClusterPlan MakeHadamardClusterPlan(int64_t tokens, int64_t n, int m, int64_t p, int sms) {
  unsigned allowed = 0;
  for (int r = 2; r <= kRowClusterMaxRanks; r *= 2) {
    // m > 1: whole chunks a rank; m = 1: slices of at least 32 values (a warp's butterflies).
    const bool ok = m > 1 ? m % r == 0 : (p % r == 0 && p / r >= 32);
    if (ok) allowed |= static_cast<unsigned>(r);
  }
  HadamardClusterPlan pl;
  pl.ranks = RowClusterRanks(tokens, sms, allowed);
  pl.local = n / pl.ranks;
  pl.seg = m > 1 ? p : p / pl.ranks;
  return pl;
}

// The layer kernels' (B ≤ 4) R2 Hadamard takes the cluster only from rows of 2,048: on the H100
// a cluster a token took 2.8b INT8 decode b1 from 2.73 to 2.60 ms and 1.4b from 1.68 to 1.57,
// but 130m (E = 1,536, 384 values a rank) from 0.469 to 0.478 (docs/benchmarks.md).
constexpr int64_t kLayerHadamardClusterMinRow = 2048;

// The levels that pair slices (m = 1): v[r] is position j of rank r's slice after its local
// levels; level h = seg·2^b pairs rank r with r + 2^b (bit b of r clear), ascending b — the
// whole transform's remaining levels, the same pairs and the same a + b / a − b.
template <int kMaxRanks>
MQ_HD void HadamardCrossLevels(float (&v)[kMaxRanks], int ranks) {
  for (int bit = 1; bit < ranks; bit <<= 1)
    for (int r = 0; r < ranks; ++r)
      if ((r & bit) == 0) {
        const float a = v[r], b = v[r | bit];
        v[r] = a + b;
        v[r | bit] = a - b;
      }
}

// ---- conv step (decode) ---------------------------------------------------------------------------
// Rank k owns channels [k·cols/ranks, (k+1)·cols/ranks) rounded to multiples of 4 (slices start on
// 16-byte boundaries of float rows); the last rank also writes the row's zero padding up to the
// INT8 row length. Slices differ by up to 4 channels: buffers are sized by RowClusterMaxSlice.
MQ_HD void RowClusterSlice(int64_t cols, int ranks, int rank, int64_t* lo, int64_t* hi) {
  const int64_t units = (cols + 3) / 4;
  *lo = rank * units / ranks * 4;
  *hi = (rank + 1) * units / ranks * 4;
  if (*lo > cols) *lo = cols;
  if (*hi > cols) *hi = cols;
}
MQ_HD int64_t RowClusterMaxSlice(int64_t cols, int ranks) {
  int64_t most = 0;
  for (int r = 0; r < ranks; ++r) {
    int64_t lo, hi;
    RowClusterSlice(cols, ranks, r, &lo, &hi);
    if (hi - lo > most) most = hi - lo;
  }
  return most;
}
// Ranks for the conv step: slices of at least 256 channels.
MQ_HD int SliceClusterRanks(int64_t tokens, int64_t E, int sms) {
  unsigned allowed = 0;
  for (int r = 2; r <= kRowClusterMaxRanks; r *= 2)
    if (E / r >= 256) allowed |= static_cast<unsigned>(r);
  return RowClusterRanks(tokens, sms, allowed);
}

}  // namespace mq::cuda::hd
