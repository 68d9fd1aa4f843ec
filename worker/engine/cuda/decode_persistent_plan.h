// The host-callable plan of the persistent decode kernel (decode_persistent_kernel.cu): which rows
// and channels each block owns, how its weight slices are cut into shared-memory stages, the
// shared-memory layout, the per-tile warp tasks and the epoch arithmetic of its grid barriers. The
// kernel calls these same functions, so its CPU twin (tests/engine/cuda_persistent_decode_twin_test.cc)
// checks the coverage (every weight byte of every row copied exactly once, every channel and row
// owned by exactly one block) and the budget for any shape and SM count without a GPU.
// Plain C++ when not under nvcc.
#pragma once

#include <cstdint>

#include "cuda/hd_math.h"

namespace mq::cuda::hd {

constexpr int kPersistWarps = 16;  // one 512-thread block per SM
constexpr int kPersistThreads = kPersistWarps * 32;
// Warp 0 issues the weight tiles as bulk (TMA) copies that complete on a per-stage mbarrier
// (PersistTileCopy); the last warp copies each layer's small per-channel data (PersistSmallLayout)
// with cp.async groups of its own.
constexpr int kPersistStages = 8;      // shared-memory weight stages (a ring)
constexpr int kPersistMaxBatch = 4;    // tokens of one step
constexpr int kPersistMaxTileRows = 256;  // bounds the per-tile partial sums
// x_proj split-K unit (channels): 32, so that a packed 4-bit column slice starts and ends on a
// 16-byte boundary (a bulk copy's alignment) as INT8 and FP16 ones do.
constexpr int kPersistXUnit = 32;
constexpr int kPersistCopyAlign = 16;  // bulk copies: 16-byte aligned addresses and sizes

// Weight formats: FP16, INT8, packed 4-bit (W4A8).
enum PersistFormat : int { kPersistF16 = 0, kPersistI8 = 1, kPersistW4 = 2 };
MQ_HD int64_t PersistWeightBytes(int fmt, int64_t elems) {
  return fmt == kPersistF16 ? 2 * elems : fmt == kPersistI8 ? elems : elems / 2;
}
MQ_HD int64_t PersistActBytes(int fmt, int64_t elems) { return fmt == kPersistF16 ? 2 * elems : elems; }
// Bytes of one GEMV chunk of weights (16 INT8 or packed-4-bit weights, 8 FP16 ones), read against
// 16 bytes of activations.
MQ_HD int PersistChunkBytes(int fmt) { return fmt == kPersistW4 ? 8 : 16; }

// Shapes of one decode step (all layers alike). ld_*: padded row lengths in elements.
struct PersistShape {
  int64_t d = 0, E = 0, N = 0, R = 0;
  int64_t ld_in = 0, ld_x = 0, ld_dt = 0, ld_out = 0;
  int64_t K = 4;               // conv kernel width
  int fmt = kPersistI8;
  int B = 1;                   // the kernel's token capacity (≤ kPersistMaxBatch)
  bool hadamard = false;       // INT8 R2 before out_proj (two E-float buffers)
  int64_t grid = 1;            // blocks of the launch (sizes the per-block small data)
};

// The small per-layer data a block's epilogues and scan read, staged in shared memory at the
// start of each layer (offsets in floats, each a multiple of 4 so that A2 rows are float4-aligned),
// for at most nc channels and no out_proj rows; and the block's own values that live across layers
// and phases (its channels' z and u of each token, its out_proj rows of h). Without it, every tile's
// epilogue waited an L2 round trip or two (scales, biases, conv weights and state) with the whole
// block behind the next __syncthreads: ~100 µs a layer on the 2.8b shape.
struct PersistSmallLayout {
  int64_t nc = 0, no = 0;
  int64_t c_ld = 0, o_ld = 0;      // nc and no rounded up to 4: the token stride of z, u and h
  // Per channel (c − c0): in_proj x-row scale and bias, z-row scale and bias, conv bias, D, gate
  // scale, dt_proj scale and bias; conv weights [nc][K]; A2 [nc][N]; conv state [B][nc][K−1].
  int64_t ws_x = 0, b_x = 0, ws_z = 0, b_z = 0, conv_b = 0, D = 0, gate = 0, ws_dt = 0, b_dt = 0;
  int64_t conv_w = 0, A2 = 0, conv_state = 0;
  int64_t ws_out = 0, b_out = 0;   // per out_proj row (o − o0); everything above is restaged each layer
  int64_t z = 0, u = 0;            // [B][nc] this layer's z and u of the block's channels
  int64_t h = 0;                   // [B][no] the block's rows of the residual stream
  int64_t floats = 0;
};
MQ_HD int64_t PersistAlign(int64_t v, int64_t a) { return (v + a - 1) / a * a; }
// Entries of one tile's partial sums (one of the two buffers): rows·parts per token.
MQ_HD int64_t PersistRedElems(int64_t B) { return static_cast<int64_t>(kPersistMaxTileRows) * B; }
MQ_HD PersistSmallLayout MakePersistSmallLayout(const PersistShape& s) {
  PersistSmallLayout l;
  const int64_t grid = s.grid > 0 ? s.grid : 1;
  l.nc = (s.E + grid - 1) / grid;
  l.no = (s.d + grid - 1) / grid;
  const int64_t c = PersistAlign(l.nc, 4), o = PersistAlign(l.no, 4);
  l.c_ld = c, l.o_ld = o;
  int64_t at = 0;
  for (int64_t* f : {&l.ws_x, &l.b_x, &l.ws_z, &l.b_z, &l.conv_b, &l.D, &l.gate, &l.ws_dt, &l.b_dt}) *f = at, at += c;
  l.conv_w = at, at += PersistAlign(l.nc * s.K, 4);
  l.A2 = at, at += PersistAlign(l.nc * s.N, 4);
  l.conv_state = at, at += PersistAlign(s.B * l.nc * (s.K - 1), 4);
  l.ws_out = at, at += o;
  l.b_out = at, at += o;
  l.z = at, at += s.B * c;
  l.u = at, at += s.B * c;
  l.h = at, at += s.B * o;
  l.floats = at;
  return l;
}

// [i·n/parts, (i+1)·n/parts): balanced, contiguous, covering [0, n) once over i < parts.
MQ_HD void PersistSplit(int64_t n, int64_t parts, int64_t i, int64_t* lo, int64_t* hi) {
  *lo = i * n / parts;
  *hi = (i + 1) * n / parts;
}

// Segments of a block's weight stream in one layer, in the order the kernel consumes them.
enum PersistSeg : int { kSegInX = 0, kSegInZ = 1, kSegXProj = 2, kSegDt = 3, kSegOut = 4, kPersistSegs = 5 };

// `rows` matrix rows from row0; of each, row_bytes bytes from byte col0 (a column slice for
// x_proj, whole rows otherwise) of rows ld_bytes apart. Stored in a stage as dense rows of
// row_bytes (from the tile's lead, PersistTileCopy); tiles of rows_per_tile rows.
struct PersistSegment {
  int64_t row0 = 0, rows = 0;
  int64_t col0 = 0, row_bytes = 0, ld_bytes = 0;
  int64_t rows_per_tile = 1;
  int tiles = 0;
};

struct PersistBlockPlan {
  int64_t c0 = 0, c1 = 0;    // channels: in_proj x and z rows, conv, dt_proj, scan, gate
  int64_t xc0 = 0, xc1 = 0;  // x_proj split-K channels (multiples of kPersistXUnit)
  int64_t o0 = 0, o1 = 0;    // out_proj rows (of d)
  PersistSegment seg[kPersistSegs];
  int tiles = 0;             // per layer
};

// Shared memory of one block (bytes, offsets 128-aligned): the stage ring, the GEMV activations
// ([B][act_ld] bytes), float scratch (a norm row, a y row, the R2 Hadamard's two E-float rows,
// δ|B|C of B tokens), the partial sums of one tile and the small data (PersistSmallLayout).
struct PersistSmemLayout {
  int64_t stage_bytes = 0;
  int64_t ring_off = 0, act_off = 0, work_off = 0, red_off = 0, small_off = 0, total = 0;
  PersistSmallLayout small;
  int64_t act_ld = 0;       // bytes of one token's activation row (the longest GEMV input)
  int64_t work_floats = 0;
  bool ok = false;          // fits: at least one row of every segment per stage
};

// The layout for a dynamic shared-memory budget; stage_bytes is what is left for the ring, cut
// into kPersistStages stages of whole 16-byte units.
MQ_HD PersistSmemLayout MakePersistSmemLayout(const PersistShape& s, int64_t budget) {
  PersistSmemLayout l;
  const int64_t act_elems = s.ld_in > s.ld_out ? s.ld_in : s.ld_out;
  l.act_ld = PersistAlign(PersistActBytes(s.fmt, act_elems), 16);
  int64_t wf = s.d > s.E ? s.d : s.E;  // a norm row; y before it becomes out_proj's input
  if (s.hadamard && 2 * s.E > wf) wf = 2 * s.E;
  if (s.B * (s.R + 2 * s.N) > wf) wf = s.B * (s.R + 2 * s.N);
  l.work_floats = PersistAlign(wf, 4);
  // Two partial-sum buffers (tiles alternate), so that a tile's epilogue needs no block barrier
  // before the next tile's GEMV writes its sums.
  const int64_t red_bytes = 2 * PersistRedElems(s.B) * 4;
  l.act_off = 0;
  l.work_off = PersistAlign(l.act_off + s.B * l.act_ld, 128);
  l.red_off = PersistAlign(l.work_off + 4 * l.work_floats, 128);
  l.small = MakePersistSmallLayout(s);
  l.small_off = PersistAlign(l.red_off + red_bytes, 128);
  l.ring_off = PersistAlign(l.small_off + 4 * l.small.floats, 128);
  const int64_t left = budget - l.ring_off;
  l.stage_bytes = left > 0 ? left / kPersistStages / 128 * 128 : 0;
  l.total = l.ring_off + l.stage_bytes * kPersistStages;
  // The widest row of any segment must fit a stage (with a contiguous tile's 16-byte lead).
  const int64_t widest[] = {PersistWeightBytes(s.fmt, s.ld_in), PersistWeightBytes(s.fmt, s.ld_dt),
                            PersistWeightBytes(s.fmt, s.ld_out)};
  l.ok = l.stage_bytes > 0 && s.grid > 0 && s.K >= 2;
  for (int64_t w : widest) l.ok = l.ok && w + kPersistCopyAlign <= l.stage_bytes;
  return l;
}

MQ_HD void PersistFinishSegment(PersistSegment* g, int64_t stage_bytes) {
  if (g->rows <= 0 || g->row_bytes <= 0) {
    g->rows = 0, g->tiles = 0, g->rows_per_tile = 1;
    return;
  }
  // A contiguous tile may start 8 bytes into a 16-byte unit (PersistTileCopy's lead).
  int64_t rpt = (stage_bytes - kPersistCopyAlign) / g->row_bytes;
  if (rpt > kPersistMaxTileRows) rpt = kPersistMaxTileRows;
  if (rpt < 1) rpt = 1;  // MakePersistSmemLayout's ok says whether a row fits at all
  g->rows_per_tile = rpt;
  g->tiles = static_cast<int>((g->rows + rpt - 1) / rpt);
}

// Block `block` of `grid`: its channel, x_proj and out_proj slices and its tiles.
MQ_HD PersistBlockPlan MakePersistBlockPlan(const PersistShape& s, int64_t stage_bytes, int64_t grid, int64_t block) {
  PersistBlockPlan p;
  PersistSplit(s.E, grid, block, &p.c0, &p.c1);
  int64_t u0, u1;
  PersistSplit(s.E / kPersistXUnit, grid, block, &u0, &u1);
  p.xc0 = u0 * kPersistXUnit, p.xc1 = u1 * kPersistXUnit;
  PersistSplit(s.d, grid, block, &p.o0, &p.o1);
  const int fmt = s.fmt;
  PersistSegment* g = p.seg;
  g[kSegInX].row0 = p.c0, g[kSegInX].rows = p.c1 - p.c0;
  g[kSegInZ].row0 = s.E + p.c0, g[kSegInZ].rows = p.c1 - p.c0;
  for (int k : {kSegInX, kSegInZ}) {
    g[k].ld_bytes = g[k].row_bytes = PersistWeightBytes(fmt, s.ld_in);
  }
  g[kSegXProj].row0 = 0, g[kSegXProj].rows = p.xc1 > p.xc0 ? s.R + 2 * s.N : 0;
  g[kSegXProj].ld_bytes = PersistWeightBytes(fmt, s.ld_x);
  g[kSegXProj].col0 = PersistWeightBytes(fmt, p.xc0);
  g[kSegXProj].row_bytes = PersistWeightBytes(fmt, p.xc1 - p.xc0);
  g[kSegDt].row0 = p.c0, g[kSegDt].rows = p.c1 - p.c0;
  g[kSegDt].ld_bytes = g[kSegDt].row_bytes = PersistWeightBytes(fmt, s.ld_dt);
  g[kSegOut].row0 = p.o0, g[kSegOut].rows = p.o1 - p.o0;
  g[kSegOut].ld_bytes = g[kSegOut].row_bytes = PersistWeightBytes(fmt, s.ld_out);
  p.tiles = 0;
  for (int k = 0; k < kPersistSegs; ++k) {
    PersistFinishSegment(&g[k], stage_bytes);
    p.tiles += g[k].tiles;
  }
  return p;
}

// Tile t (0 ≤ t < plan.tiles) of a layer: its segment, first row and row count.
struct PersistTile {
  int seg = 0;
  int64_t row0 = 0, rows = 0;
};
MQ_HD PersistTile PersistTileAt(const PersistBlockPlan& p, int t) {
  PersistTile r;
  for (int k = 0; k < kPersistSegs; ++k) {
    if (t < p.seg[k].tiles) {
      const PersistSegment& g = p.seg[k];
      r.seg = k;
      r.row0 = g.row0 + t * g.rows_per_tile;
      const int64_t end = g.row0 + g.rows;
      r.rows = (r.row0 + g.rows_per_tile < end ? r.row0 + g.rows_per_tile : end) - r.row0;
      return r;
    }
    t -= p.seg[k].tiles;
  }
  r.seg = -1;
  return r;
}

// How a tile reaches its stage: `copies` bulk copies of `bytes` bytes, copy k from matrix byte
// src + k·src_pitch to stage byte k·dst_pitch; the tile's row r then starts at stage byte
// lead + r·row_bytes. Whole-row segments are one contiguous range, widened to 16-byte bounds (a
// packed 4-bit row of 8 mod 16 bytes may start mid-unit: lead 8; the widened range stays inside
// the matrix's 16-byte-aligned allocation); x_proj's column slice is a copy a row, each 16-byte
// aligned (kPersistXUnit, PersistShapeSupported).
struct PersistTileCopy {
  int64_t src = 0, bytes = 0, src_pitch = 0, dst_pitch = 0;
  int copies = 0, lead = 0;
};
MQ_HD bool PersistContiguous(const PersistSegment& g) { return g.col0 == 0 && g.row_bytes == g.ld_bytes; }
MQ_HD int PersistTileLead(const PersistSegment& g, int64_t tile_row0) {
  return PersistContiguous(g) ? static_cast<int>((tile_row0 * g.ld_bytes) % kPersistCopyAlign) : 0;
}
MQ_HD PersistTileCopy MakePersistTileCopy(const PersistSegment& g, int64_t tile_row0, int64_t rows) {
  PersistTileCopy c;
  if (rows <= 0) return c;
  if (PersistContiguous(g)) {
    c.lead = PersistTileLead(g, tile_row0);
    const int64_t begin = tile_row0 * g.ld_bytes, end = begin + rows * g.row_bytes;
    c.src = begin - c.lead, c.bytes = PersistAlign(end, kPersistCopyAlign) - c.src, c.copies = 1;
  } else {
    c.src = tile_row0 * g.ld_bytes + g.col0, c.bytes = g.row_bytes, c.copies = static_cast<int>(rows);
    c.src_pitch = g.ld_bytes, c.dst_pitch = g.row_bytes;
  }
  return c;
}

// Shapes the persistent kernel takes (LaunchDecodePersistent refuses others; the model then keeps
// the layer kernels): state 16, conv 2..8, d % 4, E % kPersistXUnit, rows padded to 16 elements
// (so INT8 and FP16 rows are whole 16-byte units and packed 4-bit rows at least 8-byte ones).
MQ_HD bool PersistShapeSupported(int64_t d, int64_t E, int64_t N, int64_t K, int64_t ld_in, int64_t ld_x, int64_t ld_dt,
                                 int64_t ld_out) {
  return N == 16 && K >= 2 && K <= 8 && E % kPersistXUnit == 0 && d % 4 == 0 && ld_in >= d && ld_x >= E && ld_out >= E &&
         ld_dt >= 1 && ld_in % 16 == 0 && ld_x % 16 == 0 && ld_dt % 16 == 0 && ld_out % 16 == 0;
}

// Warp tasks of a GEMV over a tile of `rows` rows of `chunks` chunks: a row gets `lanes` lanes (a
// power of two covering min(chunks, 32)), a warp runs 32/lanes rows at once; with long rows and
// few of them, k splits into `parts` (warp tasks = groups·parts). rows·parts ≤
// max(rows, 2·kPersistWarps) ≤ kPersistMaxTileRows entries of partial sums per token.
struct PersistTileTasks {
  int lanes = 32, rows_per_warp = 1, groups = 0, parts = 1;
  int lanes_log2 = 5, parts_log2 = 0;  // lanes and parts are powers of two: the kernel shifts
};
MQ_HD PersistTileTasks MakePersistTileTasks(int rows, int chunks) {
  PersistTileTasks t;
  const int want = chunks < 32 ? chunks : 32;
  t.lanes = 1, t.lanes_log2 = 0;
  while (t.lanes < want) t.lanes *= 2, ++t.lanes_log2;
  t.rows_per_warp = 32 / t.lanes;
  t.groups = (rows + t.rows_per_warp - 1) / t.rows_per_warp;
  t.parts = 1, t.parts_log2 = 0;
  while (t.groups * t.parts < kPersistWarps && chunks >= 2 * t.lanes * t.parts) t.parts *= 2, ++t.parts_log2;
  return t;
}
// Chunk c of the row is read by lane (c mod lanes) of part ((c / lanes) mod parts).
MQ_HD int PersistChunkPart(const PersistTileTasks& t, int c) { return (c / t.lanes) % t.parts; }

// Grid barriers: one 64-bit counter that every block increments once per barrier and never
// resets. A launch of `per_launch` barriers over `grid` blocks advances it by per_launch·grid, so
// at the start of a launch it is a multiple of that (counter allocated zero; every launch of one
// model has the same per_launch and grid). A block reads it before its first arrival; no barrier
// of this launch can have completed, so it sees base + (arrivals so far) < base + grid and rounds
// down to base. Barrier k (0-based) of the launch is passed when the counter reaches
// base + (k + 1)·grid.
MQ_HD uint64_t PersistBarrierBase(uint64_t seen, uint64_t per_launch, uint64_t grid) {
  const uint64_t stride = per_launch * grid;
  return stride == 0 ? seen : seen - seen % stride;
}
MQ_HD uint64_t PersistBarrierTarget(uint64_t base, uint64_t k, uint64_t grid) { return base + (k + 1) * grid; }
// Four barriers a layer (u and its |max| complete; x_proj's split-K sums complete; y complete;
// h complete), none after the last layer (the LM head is the next kernel).
MQ_HD uint64_t PersistBarriersPerLaunch(int64_t layers) { return layers > 0 ? 4 * static_cast<uint64_t>(layers) - 1 : 0; }

}  // namespace mq::cuda::hd
