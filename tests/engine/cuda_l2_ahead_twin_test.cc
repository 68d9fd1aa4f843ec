// CPU twin of the decode step's L2 look-ahead (cuda/l2_ahead_plan.h): the spans the host hands the
// kernels and the pieces each block and lane prefetch, as the kernels compute them. The GPU test
// (cuda_gpu_test, ExpectDecodePathsAgree) checks that decoding with it on gives the same bits.
#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

#include "cuda/l2_ahead_plan.h"

namespace mq::cuda::hd {
namespace {

const void* At(int64_t a) { return reinterpret_cast<const void*>(static_cast<uintptr_t>(a)); }

TEST(L2AheadPlanTest, BudgetGoesToOutProjFirstThenAPrefixOfTheNextLinear) {
  const L2Span out{At(1 << 20), 13'107'200};   // 2.8b INT8 out_proj: 2560 × 5120
  const L2Span next{At(1 << 30), 26'214'400};  // the next in_proj: 10240 × 2560
  L2AheadSpans s = PlanL2Ahead(out, next, 32ll << 20);
  EXPECT_EQ(s.x.p, out.p);
  EXPECT_EQ(s.x.bytes, out.bytes);
  EXPECT_EQ(s.scan.p, next.p);
  EXPECT_EQ(s.scan.bytes, (32ll << 20) - out.bytes);
  // A budget below out_proj's bytes: only its prefix, nothing of the next linear.
  s = PlanL2Ahead(out, next, 8ll << 20);
  EXPECT_EQ(s.x.bytes, 8ll << 20);
  EXPECT_EQ(s.scan.p, nullptr);
  EXPECT_EQ(s.scan.bytes, 0);
  // A budget larger than both: both whole.
  s = PlanL2Ahead(out, next, 1ll << 30);
  EXPECT_EQ(s.x.bytes, out.bytes);
  EXPECT_EQ(s.scan.bytes, next.bytes);
  // Off.
  s = PlanL2Ahead(out, next, 0);
  EXPECT_EQ(s.x.p, nullptr);
  EXPECT_EQ(s.scan.p, nullptr);
}

TEST(L2AheadPlanTest, SpansAreSixteenByteMultiplesAndNullWhenEmpty) {
  // A W4A8 row of 40 bytes × 3 rows = 120 B: rounded down to 112 (the bulk copy's unit).
  L2AheadSpans s = PlanL2Ahead(L2Span{At(4096), 120}, L2Span{At(8192), 1000}, 130);
  EXPECT_EQ(s.x.bytes, 112);
  EXPECT_EQ(s.scan.bytes, 16);  // 130 − 112 = 18 → 16
  s = PlanL2Ahead(L2Span{At(4096), 120}, L2Span{At(8192), 1000}, 120);
  EXPECT_EQ(s.x.bytes, 112);
  EXPECT_EQ(s.scan.p, nullptr);  // 8 bytes left: less than one unit
  s = PlanL2Ahead(L2Span{nullptr, 0}, L2Span{At(8192), 1000}, 512);
  EXPECT_EQ(s.x.p, nullptr);
  EXPECT_EQ(s.scan.bytes, 512);
}

// Every (grid, lane) split covers [0, bytes) exactly once, in 16-byte-aligned pieces, as the
// kernels issue them (a block's share, then its warp-0 lanes' pieces of it).
TEST(L2AheadPlanTest, BlocksAndLanesCoverTheSpanExactlyOnce) {
  for (int64_t bytes : {16ll, 112ll, 4096ll, 13'107'200ll, 26'214'400ll - 16, 52'428'800ll}) {
    for (int64_t blocks : {1ll, 3ll, 96ll, 132ll, 160ll, 1280ll}) {
      int64_t covered = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        int64_t off, n;
        L2Piece(bytes, blocks, b, &off, &n);
        if (n <= 0) continue;
        ASSERT_EQ(off, covered) << bytes << " " << blocks << " " << b;
        ASSERT_EQ(off % 16, 0);
        ASSERT_EQ(n % 16, 0);
        int64_t lane_covered = 0;
        for (int64_t lane = 0; lane < 32; ++lane) {
          int64_t lo, ln;
          L2Piece(n, 32, lane, &lo, &ln);
          if (ln <= 0) continue;
          ASSERT_EQ(lo, lane_covered);
          ASSERT_EQ(lo % 16, 0);
          ASSERT_EQ(ln % 16, 0);
          ASSERT_LT(ln, int64_t{1} << 32);  // the instruction's size operand is 32-bit
          lane_covered += ln;
        }
        ASSERT_EQ(lane_covered, n);
        covered += n;
      }
      EXPECT_EQ(covered, bytes) << bytes << " over " << blocks << " blocks";
    }
  }
}

}  // namespace
}  // namespace mq::cuda::hd
