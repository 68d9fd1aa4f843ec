// The plan and index maps of the skinny INT8 GEMM (skinny_gemm_kernel.cu), shared with its CPU
// twin (tests/engine/cuda_skinny_gemm_twin_test.cc), which emulates the kernel's tensor-core
// fragments with these same functions. Plain C++ when not under nvcc.
//
// acc[t, o] = Σ_k x[t, k]·w[o, k] for 9–64 tokens (a decode step of the per-stage path): the
// weights are read once, straight from global memory into mma.sync m16n8k32 A fragments; the
// tokens' activations are staged once per block in shared memory in B-fragment order.
//
// The fragment trick: a dot product may visit k in any order as long as A and B visit it in the
// same one. Lane (g = lane/4, t = lane%4) loads 16 contiguous bytes of its rows g and g+8 at
// k = chunk·64 + 16t (one vector load each, coalesced in 64-byte runs) and the 16 bytes of token g
// at the same k; words 0/1 of each feed the first k32 mma of the chunk, words 2/3 the second. In
// the PTX fragment's "virtual" k, a lane's a0/a2 (row g) and b0/b1 (token g) cover 4t..4t+3 and
// 16+4t..16+4t+3, so both operands name the same physical k for every virtual k.
//
// Blocking: a block of kSkinnyWarps warps owns kSkinnyRowsPerBlock rows (kSkinnyRowTiles 16-row
// tiles a warp) and a slice of the 64-element k chunks; the `ranks` blocks of a thread-block
// cluster split k, write their partial sums to their shared memory and reduce them through
// distributed shared memory, each rank storing 1/ranks of the tile. No atomics, no zeroing pass,
// exact int32 in any order.
#pragma once

#include <cstdint>

#include "cuda/hd_math.h"

namespace mq::cuda::hd {

inline constexpr int kSkinnyWarps = 4;
inline constexpr int kSkinnyRowTiles = 2;  // 16-row mma tiles a warp
inline constexpr int kSkinnyRowsPerBlock = kSkinnyWarps * kSkinnyRowTiles * 16;
inline constexpr int kSkinnyChunk = 64;         // k elements of one step of a lane quad (4 × 16 bytes)
inline constexpr int kSkinnyMaxTokens = 64;     // 8 token tiles of 8
inline constexpr int kSkinnyMaxRanks = 8;       // portable cluster size
inline constexpr int kSkinnyPartLd = kSkinnyRowsPerBlock + 4;  // partial sums [token][row], padded (banks)
inline constexpr int64_t kSkinnyStageBudget = 64 * 1024;      // activation bytes a block stages

struct SkinnyGemmPlan {
  int token_tiles = 0;           // ⌈tokens/8⌉, 1..8
  int ranks = 0;                 // blocks of a cluster, splitting k
  int64_t row_blocks = 0;        // ⌈out / kSkinnyRowsPerBlock⌉ clusters
  int64_t chunks = 0;            // ⌈k / 64⌉
  int64_t chunks_per_rank = 0;   // the last rank may hold fewer (none empty)
  int64_t stage_bytes() const { return chunks_per_rank * token_tiles * 8 * kSkinnyChunk; }
  int64_t part_bytes() const { return static_cast<int64_t>(token_tiles) * 8 * kSkinnyPartLd * 4; }
  int64_t smem_bytes() const { return stage_bytes() > part_bytes() ? stage_bytes() : part_bytes(); }
  int64_t blocks() const { return row_blocks * ranks; }
};

// Enough clusters for every SM (`sms`) when the rows alone do not give them, as few ranks as
// that takes (each rank's partials cost a shared-memory round trip), and at most
// kSkinnyStageBudget of staged activations a block. tokens must be 1..kSkinnyMaxTokens, k ≥ 1.
inline SkinnyGemmPlan ChooseSkinnyGemmPlan(int64_t out, int64_t k, int64_t tokens, int sms) {
  SkinnyGemmPlan p;
  p.token_tiles = static_cast<int>((tokens + 7) / 8);
  p.row_blocks = (out + kSkinnyRowsPerBlock - 1) / kSkinnyRowsPerBlock;
  p.chunks = (k + kSkinnyChunk - 1) / kSkinnyChunk;
  const int64_t chunk_bytes = static_cast<int64_t>(p.token_tiles) * 8 * kSkinnyChunk;
  const int64_t max_cpr = kSkinnyStageBudget / chunk_bytes;  // ≥ 16
  int64_t ranks = (sms + p.row_blocks - 1) / p.row_blocks;
  ranks = std::max<int64_t>(ranks, (p.chunks + max_cpr - 1) / max_cpr);
  ranks = std::min<int64_t>(std::min<int64_t>(ranks, kSkinnyMaxRanks), p.chunks);
  ranks = std::max<int64_t>(ranks, 1);
  p.chunks_per_rank = (p.chunks + ranks - 1) / ranks;
  // No empty rank: with c chunks a rank, ⌈chunks / c⌉ ranks hold them all.
  p.ranks = static_cast<int>((p.chunks + p.chunks_per_rank - 1) / p.chunks_per_rank);
  return p;
}

// Whether the plan's k slices fit what one block stages (k beyond 8 ranks × 16–128 chunks takes
// cuBLASLt instead): 64 tokens → k ≤ 8,192, 8 tokens → k ≤ 65,536.
inline bool SkinnyGemmPlanFits(const SkinnyGemmPlan& p) { return p.stage_bytes() <= kSkinnyStageBudget; }

// Shared-memory byte offset of token n's 16-byte piece t (k = chunk·64 + 16t) of the block's
// local chunk cl: [chunk][token tile][lane = (n%8)·4 + t][16 bytes], so that a warp's B fragments
// of one (chunk, token tile) are 512 contiguous bytes, one lane's 16 bytes each.
MQ_HD int64_t SkinnyStageOffset(int64_t cl, int n, int t, int token_tiles) {
  return ((cl * token_tiles + (n >> 3)) * 32 + (n & 7) * 4 + t) * 16;
}

// k of lane quad position t's 16-byte piece in chunk c.
MQ_HD int64_t SkinnyPieceK(int64_t c, int t) { return c * kSkinnyChunk + 16 * t; }

// The weight row of a lane: block row range rb, warp, tile mt, upper half (+8) or not, lane group g.
MQ_HD int64_t SkinnyRow(int64_t rb, int warp, int mt, int upper, int g) {
  return rb * kSkinnyRowsPerBlock + (warp * kSkinnyRowTiles + mt) * 16 + upper * 8 + g;
}

// The m16n8k32 fragments of one k32 half h (0, 1) of a chunk from a lane's pieces: rows g and g+8
// (w_lo, w_hi) and token g (x), four int32 words each. A = {a0, a1, a2, a3}, B = {b0, b1} in PTX order.
MQ_HD void SkinnyFragments(const int32_t* w_lo, const int32_t* w_hi, const int32_t* x, int h, int32_t* a,
                           int32_t* b) {
  a[0] = w_lo[2 * h];
  a[1] = w_hi[2 * h];
  a[2] = w_lo[2 * h + 1];
  a[3] = w_hi[2 * h + 1];
  b[0] = x[2 * h];
  b[1] = x[2 * h + 1];
}

// The accumulator element i (0..3) of a lane's m16n8 D fragment: its row within the 16-row tile
// and its token within the 8-token tile (PTX: c0, c1 row g; c2, c3 row g+8; column 2t + i%2).
MQ_HD int SkinnyAccRow(int g, int i) { return g + (i >> 1) * 8; }
MQ_HD int SkinnyAccToken(int t, int i) { return 2 * t + (i & 1); }

// Where a block keeps accumulator element i of (warp, tile mt, token tile nt) of lane (g, t) for
// the cluster reduction: int32 index into [token][kSkinnyPartLd] (rows of the block contiguous).
MQ_HD int SkinnyPartIndex(int warp, int mt, int nt, int g, int t, int i) {
  const int r = (warp * kSkinnyRowTiles + mt) * 16 + SkinnyAccRow(g, i);
  const int n = nt * 8 + SkinnyAccToken(t, i);
  return n * kSkinnyPartLd + r;
}

}  // namespace mq::cuda::hd
