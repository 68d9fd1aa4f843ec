// CPU twin of the persistent decode kernel's plan (cuda/decode_persistent_plan.h, the same functions
// the kernel calls): for the Mamba-1 shapes 130m … 2.8b, every weight format, B = 1, 2, 4 and any
// SM count 1 … 264, every channel, x_proj column and out_proj row is owned by exactly one block;
// every weight byte a layer needs is brought into shared memory exactly once by bulk copies, from
// and to 16-byte aligned addresses, inside its stage; the stages, activations, scratch and partial sums
// fit the H100's shared memory without overlapping; the per-tile warp tasks read every chunk of
// every row exactly once; and the grid barriers' epoch arithmetic finds each launch's base. Runs in
// CI (no GPU); tests/engine/cuda_persistent_decode_gpu_test.cc runs the kernel.
#include <gtest/gtest.h>

#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "cuda/decode_persistent_plan.h"
#include "cuda/hd_math.h"
#include "model/model_shapes.h"

namespace mq::cuda {
namespace {

using namespace hd;

// The H100's (and H200's) opt-in shared memory per block, less the kernel's static shared memory
// (1280 bytes measured by ptxas for the INT8 kernel) rounded up.
constexpr int64_t kBudget = 232448 - 2048;

PersistShape Shape(const std::string& name, int fmt, int B) {
  auto c = ModelShapeConfig(name);
  EXPECT_TRUE(c.ok()) << name;
  PersistShape s;
  s.d = c->hidden_size, s.E = c->intermediate_size, s.N = c->state_size, s.R = c->time_step_rank;
  s.ld_in = RoundUp(s.d, 16), s.ld_x = RoundUp(s.E, 16), s.ld_dt = RoundUp(s.R, 16), s.ld_out = RoundUp(s.E, 16);
  s.K = c->conv_kernel, s.fmt = fmt, s.B = B, s.hadamard = fmt != kPersistF16;
  s.grid = 132;  // the H100's SMs; the loops over grids set their own
  return s;
}

const char* kShapes[] = {"130m", "370m", "790m", "1.4b", "2.8b"};

TEST(CudaPersistentDecodeTwinTest, SharedMemoryLayoutFitsWithoutOverlap) {
  for (const char* name : kShapes)
    for (int fmt : {kPersistF16, kPersistI8, kPersistW4})
      for (int B : {1, 2, 4}) {
        const PersistShape s = Shape(name, fmt, B);
        const PersistSmemLayout l = MakePersistSmemLayout(s, kBudget);
        SCOPED_TRACE(std::string(name) + " fmt " + std::to_string(fmt) + " B " + std::to_string(B));
        ASSERT_TRUE(l.ok);
        EXPECT_LE(l.total, kBudget);
        EXPECT_EQ(l.stage_bytes % 128, 0);
        // Activations: the longest GEMV input of every token.
        EXPECT_GE(l.act_ld, PersistActBytes(fmt, s.ld_in));
        EXPECT_GE(l.act_ld, PersistActBytes(fmt, s.ld_out));
        EXPECT_LE(l.act_off + B * l.act_ld, l.work_off);
        // Scratch: a norm row, a y row, the Hadamard's two rows, δ|B|C of every token.
        EXPECT_GE(l.work_floats, s.d);
        EXPECT_GE(l.work_floats, s.E);
        EXPECT_GE(l.work_floats, B * (s.R + 2 * s.N));
        if (s.hadamard) EXPECT_GE(l.work_floats, 2 * s.E);
        EXPECT_LE(l.work_off + 4 * l.work_floats, l.red_off);
        // Two partial-sum buffers (tiles alternate between them).
        EXPECT_EQ(PersistRedElems(B), int64_t{kPersistMaxTileRows} * B);
        EXPECT_LE(l.red_off + 2 * PersistRedElems(B) * 4, l.small_off);
        EXPECT_LE(l.small_off + 4 * l.small.floats, l.ring_off);
        EXPECT_EQ(l.small_off % 16, 0);
        // The small data: room for any block's channels and out_proj rows, regions in order, each
        // 4-float aligned (A2 rows are read as float4) and as long as the block can need.
        const PersistSmallLayout& m = l.small;
        EXPECT_GE(m.nc * s.grid, s.E);
        EXPECT_GE(m.no * s.grid, s.d);
        const int64_t S = s.K - 1;
        const std::pair<int64_t, int64_t> regions[] = {
            {m.ws_x, m.nc}, {m.b_x, m.nc}, {m.ws_z, m.nc}, {m.b_z, m.nc}, {m.conv_b, m.nc}, {m.D, m.nc},
            {m.gate, m.nc}, {m.ws_dt, m.nc}, {m.b_dt, m.nc}, {m.conv_w, m.nc * s.K}, {m.A2, m.nc * s.N},
            {m.conv_state, B * m.nc * S}, {m.ws_out, m.no}, {m.b_out, m.no}, {m.z, B * m.c_ld}, {m.u, B * m.c_ld},
            {m.h, B * m.o_ld}};
        int64_t end = 0;
        for (const auto& [off, len] : regions) {
          EXPECT_EQ(off % 4, 0);
          EXPECT_GE(off, end);
          end = off + len;
        }
        EXPECT_LE(end, m.floats);
        EXPECT_GE(m.c_ld, m.nc);
        EXPECT_GE(m.o_ld, m.no);
        EXPECT_EQ(l.ring_off + kPersistStages * l.stage_bytes, l.total);
        // Every segment's widest row fits a stage, and a stage holds at least 8 KB of weights
        // (the ring keeps ≥ 7 stages in flight per SM).
        EXPECT_GE(l.stage_bytes, PersistWeightBytes(fmt, s.ld_out));
        EXPECT_GE(l.stage_bytes, PersistWeightBytes(fmt, s.ld_in));
        EXPECT_GE(l.stage_bytes, 8 << 10);
      }
  // A budget too small for one row is refused, not silently overrun.
  PersistShape s = Shape("2.8b", kPersistF16, 4);
  EXPECT_FALSE(MakePersistSmemLayout(s, 64 << 10).ok);
}

// Ownership and tile coverage from the plan alone (cheap): for every grid size 1..264.
TEST(CudaPersistentDecodeTwinTest, EveryChannelRowAndTileOwnedOnceForAnyGrid) {
  for (const char* name : kShapes)
    for (int fmt : {kPersistF16, kPersistI8, kPersistW4})
      for (int B : {1, 4}) {
        PersistShape s = Shape(name, fmt, B);
        for (int64_t grid = 1; grid <= 264; ++grid) {
          SCOPED_TRACE(std::string(name) + " fmt " + std::to_string(fmt) + " grid " + std::to_string(grid));
          // The per-block small data grows as the grid shrinks: a layout that does not fit is
          // refused (the launch returns UNIMPLEMENTED); from 32 blocks up every shape fits.
          s.grid = grid;
          const PersistSmemLayout l = MakePersistSmemLayout(s, kBudget);
          if (grid >= 32) ASSERT_TRUE(l.ok);
          if (!l.ok) continue;
          ASSERT_LE(l.total, kBudget);
          int64_t next_c = 0, next_x = 0, next_o = 0;
          for (int64_t b = 0; b < grid; ++b) {
            const PersistBlockPlan p = MakePersistBlockPlan(s, l.stage_bytes, grid, b);
            ASSERT_EQ(p.c0, next_c);
            ASSERT_EQ(p.xc0, next_x);
            ASSERT_EQ(p.o0, next_o);
            ASSERT_LE(p.c0, p.c1);
            ASSERT_LE(p.xc0, p.xc1);
            ASSERT_LE(p.o0, p.o1);
            ASSERT_EQ(p.xc0 % kPersistXUnit, 0);
            next_c = p.c1, next_x = p.xc1, next_o = p.o1;
            // The tiles of a layer, in order: each segment's rows once, consecutively, within a stage.
            int t = 0;
            for (int k = 0; k < kPersistSegs; ++k) {
              const PersistSegment& g = p.seg[k];
              int64_t row = g.row0;
              for (int i = 0; i < g.tiles; ++i, ++t) {
                const PersistTile tile = PersistTileAt(p, t);
                ASSERT_EQ(tile.seg, k);
                ASSERT_EQ(tile.row0, row);
                ASSERT_GE(tile.rows, 1);
                ASSERT_LE(tile.rows, kPersistMaxTileRows);
                ASSERT_LE(tile.rows * g.row_bytes, l.stage_bytes);
                row += tile.rows;
              }
              ASSERT_EQ(row, g.row0 + g.rows);
            }
            ASSERT_EQ(t, p.tiles);
            ASSERT_EQ(PersistTileAt(p, p.tiles).seg, -1);
            // Channel-owned segments.
            ASSERT_EQ(p.seg[kSegInX].row0, p.c0);
            ASSERT_EQ(p.seg[kSegInX].rows, p.c1 - p.c0);
            ASSERT_EQ(p.seg[kSegInZ].row0, s.E + p.c0);
            ASSERT_EQ(p.seg[kSegDt].row0, p.c0);
            ASSERT_EQ(p.seg[kSegDt].rows, p.c1 - p.c0);
            ASSERT_EQ(p.seg[kSegOut].row0, p.o0);
            ASSERT_EQ(p.seg[kSegOut].rows, p.o1 - p.o0);
            ASSERT_EQ(p.seg[kSegXProj].rows, p.xc1 > p.xc0 ? s.R + 2 * s.N : 0);
          }
          ASSERT_EQ(next_c, s.E);
          ASSERT_EQ(next_x, s.E);
          ASSERT_EQ(next_o, s.d);
        }
      }
}

// Byte-level: the bulk copies of every tile of every block (MakePersistTileCopy, issued by the
// kernel's warp 0) bring each weight byte a layer reads into the tile's rows exactly once (x_proj:
// the first E columns of each row; the padding columns meet zero activations and are skipped);
// every copy's source, destination and size are 16-byte aligned (a bulk copy's requirement), its
// source inside the matrix, its destination inside the stage; the tile's rows sit densely from its
// lead; and a contiguous tile's widening to 16-byte bounds reads at most the neighbouring rows' bytes.
TEST(CudaPersistentDecodeTwinTest, TileCopiesCoverEveryWeightByteOnce) {
  for (const char* name : {"130m", "2.8b"})
    for (int fmt : {kPersistF16, kPersistI8, kPersistW4})
      for (int64_t grid : {1, 7, 32, 132, 264}) {
        SCOPED_TRACE(std::string(name) + " fmt " + std::to_string(fmt) + " grid " + std::to_string(grid));
        PersistShape s = Shape(name, fmt, 4);
        s.grid = grid;
        ASSERT_TRUE(PersistShapeSupported(s.d, s.E, s.N, s.K, s.ld_in, s.ld_x, s.ld_dt, s.ld_out));
        const PersistSmemLayout l = MakePersistSmemLayout(s, kBudget);
        if (grid >= 32) ASSERT_TRUE(l.ok);
        if (!l.ok) continue;
        const int64_t rb_in = PersistWeightBytes(fmt, s.ld_in), rb_x = PersistWeightBytes(fmt, s.ld_x);
        const int64_t rb_dt = PersistWeightBytes(fmt, s.ld_dt), rb_out = PersistWeightBytes(fmt, s.ld_out);
        const int64_t xrows = s.R + 2 * s.N;
        // Counters per 8-byte word (every row length and offset is a multiple of 8).
        std::vector<uint8_t> in(static_cast<size_t>(2 * s.E * rb_in / 8)), x(static_cast<size_t>(xrows * rb_x / 8)),
            dt(static_cast<size_t>(s.E * rb_dt / 8)), out(static_cast<size_t>(s.d * rb_out / 8));
        std::vector<uint8_t>* mats[kPersistSegs] = {&in, &in, &x, &dt, &out};
        for (int64_t b = 0; b < grid; ++b) {
          const PersistBlockPlan p = MakePersistBlockPlan(s, l.stage_bytes, grid, b);
          for (int t = 0; t < p.tiles; ++t) {
            const PersistTile tile = PersistTileAt(p, t);
            const PersistSegment& g = p.seg[tile.seg];
            ASSERT_EQ(g.row_bytes % 8, 0);
            const int64_t mat_bytes = 8 * static_cast<int64_t>(mats[tile.seg]->size());
            const PersistTileCopy c = MakePersistTileCopy(g, tile.row0, tile.rows);
            ASSERT_GE(c.copies, 1);
            ASSERT_EQ(c.lead, PersistTileLead(g, tile.row0));
            ASSERT_EQ(c.bytes % kPersistCopyAlign, 0);
            // Stage word k holds matrix word src_of[k] (or −1: not written).
            std::vector<int64_t> src_of(static_cast<size_t>(l.stage_bytes / 8), -1);
            for (int k = 0; k < c.copies; ++k) {
              const int64_t src = c.src + k * c.src_pitch, dst = k * c.dst_pitch;
              ASSERT_EQ(src % kPersistCopyAlign, 0);
              ASSERT_EQ(dst % kPersistCopyAlign, 0);
              ASSERT_GE(src, 0);
              ASSERT_LE(src + c.bytes, mat_bytes);
              ASSERT_LE(dst + c.bytes, l.stage_bytes);
              for (int64_t w = 0; w < c.bytes; w += 8) {
                ASSERT_EQ(src_of[static_cast<size_t>((dst + w) / 8)], -1) << "stage word written twice";
                src_of[static_cast<size_t>((dst + w) / 8)] = (src + w) / 8;
              }
            }
            // Row r of the tile at lead + r·row_bytes holds the matrix row's slice.
            for (int64_t r = 0; r < tile.rows; ++r)
              for (int64_t w = 0; w < g.row_bytes; w += 8) {
                const int64_t want = ((tile.row0 + r) * g.ld_bytes + g.col0 + w) / 8;
                ASSERT_EQ(src_of[static_cast<size_t>((c.lead + r * g.row_bytes + w) / 8)], want) << "row " << r;
                ++(*mats[tile.seg])[static_cast<size_t>(want)];
              }
          }
        }
        for (uint8_t c : in) ASSERT_EQ(c, 1);
        for (uint8_t c : dt) ASSERT_EQ(c, 1);
        for (uint8_t c : out) ASSERT_EQ(c, 1);
        const int64_t x_used = PersistWeightBytes(fmt, s.E);
        for (int64_t r = 0; r < xrows; ++r)
          for (int64_t k = 0; k < rb_x; k += 8) ASSERT_EQ(x[static_cast<size_t>((r * rb_x + k) / 8)], k < x_used ? 1 : 0);
      }
}

// Shapes the kernel refuses (the model then keeps the layer kernels): a d_inner that splits x_proj
// into slices whose packed 4-bit columns would not be 16-byte aligned, odd widths, unpadded rows.
TEST(CudaPersistentDecodeTwinTest, UnsupportedShapesAreRefused) {
  EXPECT_TRUE(PersistShapeSupported(2560, 5120, 16, 4, 2560, 5120, 160, 5120));
  EXPECT_TRUE(PersistShapeSupported(256, 512, 16, 4, 256, 512, 16, 512));
  EXPECT_FALSE(PersistShapeSupported(264, 528, 16, 4, 272, 528, 32, 528));  // E % 32 != 0
  EXPECT_FALSE(PersistShapeSupported(2560, 5120, 8, 4, 2560, 5120, 160, 5120));  // state 8
  EXPECT_FALSE(PersistShapeSupported(2560, 5120, 16, 9, 2560, 5120, 160, 5120));  // conv 9
  EXPECT_FALSE(PersistShapeSupported(2562, 5120, 16, 4, 2576, 5120, 176, 5120));  // d % 4 != 0
  EXPECT_FALSE(PersistShapeSupported(2560, 5120, 16, 4, 2568, 5120, 160, 5120));  // ld_in not padded
}

// The warp tasks of a tile GEMV (TileGemv's index map): every chunk of every row read once, and the
// partial sums fit their shared-memory array (rows·parts ≤ kPersistMaxTileRows per token).
TEST(CudaPersistentDecodeTwinTest, TileTasksReadEveryChunkOnce) {
  std::set<std::pair<int, int>> shapes;
  for (int rows : {1, 2, 3, 5, 8, 9, 16, 17, 31, 32, 33, 64, 100, 192, 255, 256})
    for (int chunks : {1, 2, 3, 4, 5, 8, 10, 16, 20, 32, 48, 80, 96, 160, 320, 640}) shapes.insert({rows, chunks});
  for (const auto& [rows, chunks] : shapes) {
    const PersistTileTasks t = MakePersistTileTasks(rows, chunks);
    SCOPED_TRACE("rows " + std::to_string(rows) + " chunks " + std::to_string(chunks));
    ASSERT_GE(t.lanes, 1);
    ASSERT_LE(t.lanes, 32);
    ASSERT_EQ(32 % t.lanes, 0);
    ASSERT_EQ(t.lanes, 1 << t.lanes_log2);  // the kernel shifts instead of dividing
    ASSERT_EQ(t.parts, 1 << t.parts_log2);
    ASSERT_LE(rows * t.parts, kPersistMaxTileRows);
    std::vector<int> seen(static_cast<size_t>(rows * chunks), 0);
    for (int task = 0; task < t.groups * t.parts; ++task) {
      const int grp = task >> t.parts_log2, part = task & (t.parts - 1);
      for (int lane = 0; lane < 32; ++lane) {
        const int r = grp * t.rows_per_warp + (lane >> t.lanes_log2), gl = lane & (t.lanes - 1);
        if (r >= rows) continue;
        for (int c = part * t.lanes + gl; c < chunks; c += t.lanes * t.parts) {
          ASSERT_EQ(PersistChunkPart(t, c), part);
          ++seen[static_cast<size_t>(r * chunks + c)];
        }
      }
    }
    for (int v : seen) ASSERT_EQ(v, 1);
  }
}

// Launch after launch of `per_launch` barriers: a block reading the counter before its first
// arrival (any number of other blocks already arrived) finds the launch's base, and the last
// barrier's target is the next launch's base.
TEST(CudaPersistentDecodeTwinTest, BarrierEpochsNeedNoReset) {
  for (int64_t layers : {1, 2, 24, 64})
    for (uint64_t grid : {1u, 2u, 7u, 132u, 264u}) {
      const uint64_t per_launch = PersistBarriersPerLaunch(layers);
      ASSERT_EQ(per_launch, static_cast<uint64_t>(4 * layers - 1));
      uint64_t counter = 0;
      for (int launch = 0; launch < 50; ++launch) {
        const uint64_t base = counter;
        for (uint64_t arrived = 0; arrived < grid; ++arrived) ASSERT_EQ(PersistBarrierBase(base + arrived, per_launch, grid), base);
        for (uint64_t k = 0; k < per_launch; ++k) ASSERT_EQ(PersistBarrierTarget(base, k, grid), base + (k + 1) * grid);
        counter += per_launch * grid;  // every block arrives at every barrier once
        ASSERT_EQ(PersistBarrierTarget(base, per_launch - 1, grid), counter);
      }
    }
}

TEST(CudaPersistentDecodeTwinTest, SplitIsBalancedAndContiguous) {
  for (int64_t n : {0, 1, 5, 16, 320, 5120})
    for (int64_t parts : {1, 3, 132, 264}) {
      int64_t next = 0;
      for (int64_t i = 0; i < parts; ++i) {
        int64_t lo, hi;
        PersistSplit(n, parts, i, &lo, &hi);
        ASSERT_EQ(lo, next);
        ASSERT_LE(hi - lo, n / parts + 1);
        ASSERT_GE(hi - lo, n / parts);
        next = hi;
      }
      ASSERT_EQ(next, n);
    }
}

}  // namespace
}  // namespace mq::cuda
