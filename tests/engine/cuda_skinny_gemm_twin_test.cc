// CPU twin of the skinny tensor-core GEMM (cuda/skinny_gemm_kernel.cu): the kernel's plan, shared
// -memory layout, lane → (row, k) map and m16n8k32 fragment assignment (cuda/skinny_gemm_plan.h,
// compiled here as plain C++), with each mma.sync emulated from the fragment layout PTX defines for
// .s8 m16n8k32 — A row-major (a0/a2 row g, a1/a3 row g+8; a0/a1 k 4t.., a2/a3 k 16+4t..), B
// column-major (b0 k 4t.., b1 k 16+4t.., column g), D (c0/c1 row g, c2/c3 row g+8, columns 2t, 2t+1).
// Every weight piece must be read exactly once, every output stored exactly once, and the sums must
// equal the CPU's exact int32 products, for INT8 rows and for packed int4 rows unpacked as the
// kernel does. CI runs this; cuda_skinny_gemm_gpu_test runs the kernel.
#include <gtest/gtest.h>

#include <cstdint>
#include <map>
#include <vector>

#include "cuda/int4_math.h"
#include "cuda/skinny_gemm_plan.h"
#include "model/int4_pack.h"
#include "model/linear.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::Int8Word;
using testing::LeWord;
using testing::RandomInt8;

int8_t Byte(int32_t w, int j) { return static_cast<int8_t>(static_cast<uint32_t>(w) >> (8 * j)); }

struct Operands {
  int64_t out = 0, kp = 0, tokens = 0;
  std::vector<int8_t> w;       // [out, kp] levels
  std::vector<uint8_t> w4;     // packed, when the levels are 4-bit
  std::vector<int8_t> x;       // [tokens, kp]
};

// A lane's four words of row `row` at k: the INT8 row's 16 bytes, or the packed row's 8 bytes
// unpacked with the kernel's hd::UnpackInt4Word.
void LoadPiece(const Operands& o, bool w4, int64_t row, int64_t k, int32_t* words) {
  if (w4) {
    const uint8_t* b = o.w4.data() + row * (o.kp / 2) + k / 2;
    hd::UnpackInt4Word(LeWord(b), &words[0], &words[1]);
    hd::UnpackInt4Word(LeWord(b + 4), &words[2], &words[3]);
  } else {
    for (int q = 0; q < 4; ++q) words[q] = Int8Word(&o.w[row * o.kp + k + 4 * q]);
  }
}

// The kernel, block by block and warp by warp, with sms SMs.
std::vector<int32_t> EmulateSkinny(const Operands& o, bool w4, int sms) {
  const hd::SkinnyGemmPlan pl = hd::ChooseSkinnyGemmPlan(o.out, o.kp, o.tokens, sms);
  EXPECT_TRUE(hd::SkinnyGemmPlanFits(pl));
  EXPECT_GE(pl.ranks, 1);
  EXPECT_LE(pl.ranks, hd::kSkinnyMaxRanks);
  EXPECT_LE(pl.smem_bytes(), hd::kSkinnyStageBudget);
  EXPECT_LT((pl.ranks - 1) * pl.chunks_per_rank, pl.chunks) << "an empty rank";
  EXPECT_GE(pl.ranks * pl.chunks_per_rank, pl.chunks) << "chunks left out";
  const int TT = pl.token_tiles;
  std::vector<int32_t> acc(static_cast<size_t>(o.tokens * o.out), 0x7f7f7f7f);
  std::vector<int> stores(acc.size(), 0);
  std::vector<int> reads(static_cast<size_t>(o.out * (o.kp / 16)), 0);
  for (int64_t rb = 0; rb < pl.row_blocks; ++rb) {
    std::vector<std::vector<int32_t>> part(static_cast<size_t>(pl.ranks));
    for (int rank = 0; rank < pl.ranks; ++rank) {
      const int64_t c0 = rank * pl.chunks_per_rank;
      const int64_t nc = std::min(pl.chunks_per_rank, pl.chunks - c0);
      // Staging: every byte of the slice written once, zeros past tokens and k.
      std::vector<int8_t> smem(static_cast<size_t>(pl.stage_bytes()), 0);
      std::vector<int> written(smem.size() / 16, 0);
      for (int64_t cl = 0; cl < nc; ++cl)
        for (int n = 0; n < TT * 8; ++n)
          for (int pt = 0; pt < 4; ++pt) {
            const int64_t off = hd::SkinnyStageOffset(cl, n, pt, TT), k = hd::SkinnyPieceK(c0 + cl, pt);
            EXPECT_EQ(off % 16, 0);
            EXPECT_LT(off, pl.stage_bytes());
            ++written[static_cast<size_t>(off / 16)];
            if (n < o.tokens && k < o.kp) std::copy_n(&o.x[n * o.kp + k], 16, &smem[static_cast<size_t>(off)]);
          }
      for (int64_t i = 0; i < nc * TT * 8 * 4; ++i) EXPECT_EQ(written[static_cast<size_t>(i)], 1);
      std::vector<int32_t>& pt_sum = part[static_cast<size_t>(rank)];
      pt_sum.assign(static_cast<size_t>(TT * 8 * hd::kSkinnyPartLd), 0);
      for (int warp = 0; warp < hd::kSkinnyWarps; ++warp)
        for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt) {
          std::vector<int32_t> d(static_cast<size_t>(TT * 16 * 8), 0);  // [nt][row 16][token 8]
          for (int64_t cl = 0; cl < nc; ++cl)
            for (int nt = 0; nt < TT; ++nt)
              for (int h = 0; h < 2; ++h) {
                int8_t A[16][32] = {}, B[32][8] = {};
                for (int lane = 0; lane < 32; ++lane) {
                  const int g = lane >> 2, t = lane & 3;
                  const int64_t k = hd::SkinnyPieceK(c0 + cl, t);
                  int32_t lo[4] = {0, 0, 0, 0}, hi[4] = {0, 0, 0, 0}, xw[4];
                  const int64_t rlo = hd::SkinnyRow(rb, warp, mt, 0, g), rhi = hd::SkinnyRow(rb, warp, mt, 1, g);
                  if (k < o.kp) {
                    if (rlo < o.out) LoadPiece(o, w4, rlo, k, lo);
                    if (rhi < o.out) LoadPiece(o, w4, rhi, k, hi);
                    if (nt == 0 && h == 0) {
                      if (rlo < o.out) ++reads[static_cast<size_t>(rlo * (o.kp / 16) + k / 16)];
                      if (rhi < o.out) ++reads[static_cast<size_t>(rhi * (o.kp / 16) + k / 16)];
                    }
                  }
                  for (int q = 0; q < 4; ++q)
                    xw[q] = Int8Word(&smem[static_cast<size_t>(hd::SkinnyStageOffset(cl, nt * 8 + g, t, TT) + 4 * q)]);
                  int32_t a[4], b[2];
                  hd::SkinnyFragments(lo, hi, xw, h, a, b);
                  for (int j = 0; j < 4; ++j) {
                    A[g][4 * t + j] = Byte(a[0], j);
                    A[g + 8][4 * t + j] = Byte(a[1], j);
                    A[g][16 + 4 * t + j] = Byte(a[2], j);
                    A[g + 8][16 + 4 * t + j] = Byte(a[3], j);
                    B[4 * t + j][g] = Byte(b[0], j);
                    B[16 + 4 * t + j][g] = Byte(b[1], j);
                  }
                }
                for (int r = 0; r < 16; ++r)
                  for (int n = 0; n < 8; ++n) {
                    int32_t s = 0;
                    for (int kk = 0; kk < 32; ++kk) s += static_cast<int32_t>(A[r][kk]) * B[kk][n];
                    d[static_cast<size_t>((nt * 16 + r) * 8 + n)] += s;
                  }
              }
          // The D fragments back to the lanes, then to the block's partial sums.
          std::vector<int> seen(pt_sum.size(), 0);
          for (int nt = 0; nt < TT; ++nt)
            for (int lane = 0; lane < 32; ++lane)
              for (int i = 0; i < 4; ++i) {
                const int g = lane >> 2, t = lane & 3;
                const int idx = hd::SkinnyPartIndex(warp, mt, nt, g, t, i);
                EXPECT_GE(idx, 0);
                EXPECT_LT(idx, static_cast<int>(pt_sum.size()));
                pt_sum[static_cast<size_t>(idx)] =
                    d[static_cast<size_t>((nt * 16 + hd::SkinnyAccRow(g, i)) * 8 + hd::SkinnyAccToken(t, i))];
              }
        }
    }
    // The cluster reduction: rank r's threads take e = r·threads + tid, stepping ranks·threads.
    const int threads = hd::kSkinnyWarps * 32;
    const int64_t ntok = std::min<int64_t>(o.tokens, TT * 8);
    const int64_t row0 = rb * hd::kSkinnyRowsPerBlock;
    for (int rank = 0; rank < pl.ranks; ++rank)
      for (int tid = 0; tid < threads; ++tid)
        for (int64_t e = rank * threads + tid; e < ntok * hd::kSkinnyRowsPerBlock; e += pl.ranks * threads) {
          const int64_t n = e / hd::kSkinnyRowsPerBlock, r = e % hd::kSkinnyRowsPerBlock;
          if (row0 + r >= o.out) continue;
          int32_t s = 0;
          for (int q = 0; q < pl.ranks; ++q) s += part[static_cast<size_t>(q)][static_cast<size_t>(n * hd::kSkinnyPartLd + r)];
          acc[static_cast<size_t>(n * o.out + row0 + r)] = s;
          ++stores[static_cast<size_t>(n * o.out + row0 + r)];
        }
  }
  for (size_t i = 0; i < stores.size(); ++i) EXPECT_EQ(stores[i], 1) << "output " << i;
  for (size_t i = 0; i < reads.size(); ++i) EXPECT_EQ(reads[i], 1) << "weight piece " << i;
  return acc;
}

Operands MakeOperands(int64_t out, int64_t k, int64_t tokens, bool w4, uint64_t seed) {
  Operands o;
  o.out = out, o.kp = hd::RoundUp(k, 16), o.tokens = tokens;
  o.w = RandomInt8(static_cast<size_t>(out * o.kp), seed);
  o.x = RandomInt8(static_cast<size_t>(tokens * o.kp), seed + 1);
  for (auto& v : o.w)
    if (w4) v = static_cast<int8_t>(v % 8);  // −7..7
  for (int64_t r = 0; r < out; ++r) std::fill(o.w.begin() + r * o.kp + k, o.w.begin() + (r + 1) * o.kp, 0);
  for (int64_t t = 0; t < tokens; ++t) std::fill(o.x.begin() + t * o.kp + k, o.x.begin() + (t + 1) * o.kp, 0);
  if (w4) {
    auto packed = PackInt4Rows(o.w.data(), out, o.kp, o.kp / 2);
    EXPECT_TRUE(packed.ok());
    o.w4 = *packed;
  }
  return o;
}

TEST(CudaSkinnyGemmTwinTest, FragmentsPlanAndReductionEqualTheCpuProducts) {
  // (out, k) of in_proj, x_proj, dt_proj and out_proj of mamba-small / 130m, odd sizes, and a
  // 2.8b in_proj at the smallest token count.
  struct Case { int64_t out, k; std::vector<int64_t> tokens; };
  const std::vector<Case> cases = {
      {1536, 384, {9, 64}},  {56, 768, {16, 33}},  {768, 24, {9}},       {384, 768, {12, 64}},
      {3072, 768, {17}},     {80, 1536, {64}},     {1536, 48, {40}},     {768, 1536, {9, 57}},
      {7, 5, {1, 9}},        {33, 37, {64}},       {130, 200, {5}},      {10240, 2560, {9}},
  };
  for (const bool w4 : {false, true})
    for (const Case& c : cases)
      for (int64_t tokens : c.tokens)
        for (int sms : {132, 16}) {
          if (c.out * c.k > 4'000'000 && sms != 132) continue;
          const Operands o = MakeOperands(c.out, c.k, tokens, w4, static_cast<uint64_t>(c.out * 131 + c.k + tokens));
          std::vector<int32_t> ref(static_cast<size_t>(tokens * c.out));
          Int8MatMulTransposedB(o.x.data(), o.w.data(), ref.data(), tokens, o.kp, c.out);
          ASSERT_EQ(EmulateSkinny(o, w4, sms), ref)
              << (w4 ? "W4" : "INT8") << " out " << c.out << " k " << c.k << " tokens " << tokens << " sms " << sms;
        }
}

TEST(CudaSkinnyGemmTwinTest, PlanSpreadsEverySmAndBoundsTheStagedSlices) {
  // 2.8b at 64 tokens: in_proj 80 row blocks → 2 ranks (160 blocks); out_proj 20 → 7 ranks;
  // x_proj 2 → 8; dt_proj (k = 160, 3 chunks) → 3.
  const auto in = hd::ChooseSkinnyGemmPlan(10240, 2560, 64, 132);
  EXPECT_EQ(in.row_blocks, 80);
  EXPECT_EQ(in.ranks, 3);  // 40 chunks: 2 ranks would stage 20 chunks × 4 KiB > 64 KiB
  EXPECT_EQ(in.chunks_per_rank, 14);
  const auto outp = hd::ChooseSkinnyGemmPlan(2560, 5120, 64, 132);
  EXPECT_EQ(outp.row_blocks, 20);
  EXPECT_EQ(outp.ranks, 7);
  const auto xp = hd::ChooseSkinnyGemmPlan(192, 5120, 64, 132);
  EXPECT_EQ(xp.ranks, 8);
  EXPECT_EQ(xp.chunks_per_rank, 10);
  const auto dt = hd::ChooseSkinnyGemmPlan(5120, 160, 64, 132);
  EXPECT_EQ(dt.ranks, 3);
  for (int64_t tokens = 1; tokens <= hd::kSkinnyMaxTokens; ++tokens)
    for (int64_t k : {16, 160, 2560, 5120, 8192})
      for (int64_t out : {1, 192, 2560, 10240}) {
        const auto p = hd::ChooseSkinnyGemmPlan(out, k, tokens, 132);
        EXPECT_TRUE(hd::SkinnyGemmPlanFits(p)) << out << " " << k << " " << tokens;
        EXPECT_LE(p.smem_bytes(), hd::kSkinnyStageBudget);
      }
  EXPECT_FALSE(hd::SkinnyGemmPlanFits(hd::ChooseSkinnyGemmPlan(2560, 65536, 64, 132)));
}

}  // namespace
}  // namespace mq::cuda
