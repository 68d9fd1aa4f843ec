// CPU twins of the CUDA kernels: the same arithmetic (cuda/hd_math.h, compiled here as plain
// C++) and the same blocking and index maps as the kernels, run on the host against the CPU
// reference. These run in CI, which has no GPU; tests/engine/cuda_gpu_test.cc runs the kernels.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "cpu/selective_scan.h"
#include "cuda/hd_math.h"
#include "cuda/row_cluster_plan.h"
#include "cuda/state_slots.h"
#include "model/linear.h"
#include "quant/hadamard.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::RandomFloat;
using testing::Int8Word;
using testing::RandomInt8;

// Emulates Int8GemvKernel lane by lane: layout, chunk assignment, dp4a words, group and k-split
// reductions; every chunk of every row must be read exactly once and the sums must equal the
// CPU reference's exact int32 products.
void EmulateGemv(const std::vector<int8_t>& w, const std::vector<int8_t>& x, int64_t out, int64_t kp, int64_t tokens,
                 std::vector<int32_t>* acc, std::vector<int>* reads) {
  const hd::GemvLayout l = hd::ChooseGemvLayout(kp, out);
  ASSERT_EQ(32 % l.group, 0);
  ASSERT_TRUE(l.ksplit == 1 || l.ksplit == hd::kGemvWarps);
  acc->assign(static_cast<size_t>(tokens * out), 0);
  reads->assign(static_cast<size_t>(out * l.chunks), 0);
  const int64_t blocks = (out + l.rows_per_block() - 1) / l.rows_per_block();
  for (int64_t blk = 0; blk < blocks; ++blk) {
    for (int warp = 0; warp < hd::kGemvWarps; ++warp) {
      const int rowset = warp / l.ksplit, kpart = warp % l.ksplit;
      for (int lane = 0; lane < 32; ++lane) {
        const int grp = lane / l.group, gl = lane % l.group;
        const int64_t row = blk * l.rows_per_block() + rowset * l.rows_per_warp + grp;
        if (row >= out) continue;
        for (int64_t it = 0; it < l.iters; ++it) {
          const int64_t ch = hd::GemvChunk(l, kpart, gl, it);
          if (ch >= l.chunks) continue;
          ++(*reads)[row * l.chunks + ch];
          for (int64_t t = 0; t < tokens; ++t) {
            int32_t& a = (*acc)[t * out + row];
            for (int q = 0; q < 4; ++q)
              a = hd::Dp4a(Int8Word(&w[row * kp + ch * 16 + 4 * q]), Int8Word(&x[t * kp + ch * 16 + 4 * q]), a);
          }
        }
      }
    }
  }
}

TEST(CudaTwinTest, Int8GemvBlockingCoversEveryChunkAndMatchesCpu) {
  // (out, k) of in_proj, x_proj, dt_proj and out_proj for the fixtures and the real family.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {256, 64},   {36, 128},   {128, 4},    {64, 128},    // tiny
      {1536, 384}, {56, 768},   {768, 24},   {384, 768},   // small
      {3072, 768}, {80, 1536},  {1536, 48},  {768, 1536},  // 130m
      {10240, 2560}, {192, 5120}, {5120, 160}, {2560, 5120}};  // 2.8b
  for (const auto& [out, k] : shapes) {
    const int64_t kp = hd::RoundUp(k, 16);
    for (int64_t tokens : {1, 3}) {
      std::vector<int8_t> w = RandomInt8(static_cast<size_t>(out * kp), out * 7 + k);
      std::vector<int8_t> x = RandomInt8(static_cast<size_t>(tokens * kp), k * 3 + tokens);
      for (int64_t r = 0; r < out; ++r) std::fill(w.begin() + r * kp + k, w.begin() + (r + 1) * kp, 0);
      for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * kp + k, x.begin() + (t + 1) * kp, 0);
      std::vector<int32_t> acc;
      std::vector<int> reads;
      EmulateGemv(w, x, out, kp, tokens, &acc, &reads);
      for (int r : reads) ASSERT_EQ(r, 1) << "out " << out << " k " << k;
      std::vector<int32_t> ref(static_cast<size_t>(tokens * out));
      Int8MatMulTransposedB(x.data(), w.data(), ref.data(), tokens, kp, out);
      ASSERT_EQ(acc, ref) << "out " << out << " k " << k << " tokens " << tokens;
    }
  }
}

// The decode GEMV plan (decode_kernels.cu) on the family's shapes: every 16-byte chunk of every
// row is read by exactly one (block, warp task, lane, chunk slot), blocks never hold more tiles
// than their shared memory was sized for, and the grid fits the block budget.
TEST(CudaTwinTest, DecodeGemvPlanCoversEveryChunkOnce) {
  struct Case { int64_t rows, ld_bytes, max_blocks; };
  std::vector<Case> cases;
  for (int64_t d : {64, 384, 768, 1024, 1536, 2048, 2560}) {
    const int64_t E = 2 * d, R = (d + 15) / 16, Ep = E;
    for (int64_t elem : {1, 2}) {  // INT8, FP16
      cases.push_back({2 * E, d * elem, 264});          // in_proj
      cases.push_back({R + 32, Ep * elem, 64});          // x_proj, the 64-block grid before
      cases.push_back({R + 32, Ep * elem, 132});         // x_proj, up to a block an SM
      cases.push_back({d, Ep * elem, 264});              // out_proj
      cases.push_back({d, Ep * elem, 132});              // out_proj, one block an SM
    }
    cases.push_back({50280, d * 2, 264});                // LM head (FP16)
  }
  cases.push_back({7, 16, 264});  // fewer rows than one tile per block
  for (const Case& c : cases) {
    const hd::DecodeGemvPlan g = hd::MakeDecodeGemvPlan(c.rows, c.ld_bytes, c.max_blocks, 24 << 20);
    SCOPED_TRACE("rows " + std::to_string(c.rows) + " ld_bytes " + std::to_string(c.ld_bytes));
    ASSERT_GE(g.grid, 1);
    ASSERT_LE(g.grid, c.max_blocks);
    ASSERT_TRUE(g.parts == 1 || g.parts == 2 || g.parts == 4 || g.parts == 8);
    std::vector<int> reads(static_cast<size_t>(c.rows * g.chunks), 0);
    int64_t next_tile = 0;
    for (int64_t blk = 0; blk < g.grid; ++blk) {
      int64_t t0;
      int n;
      hd::DecodeBlockTiles(g, blk, &t0, &n);
      ASSERT_EQ(t0, next_tile);
      ASSERT_GE(n, 1);
      ASSERT_LE(n, g.max_tiles);
      next_tile = t0 + n;
      for (int warp = 0; warp < hd::kDecodeWarps; ++warp)
        for (int task = warp; task < n * g.parts; task += hd::kDecodeWarps) {
          const int64_t tile = t0 + task / g.parts;
          const int part = task % g.parts, stride = 32 * g.parts;
          for (int lane = 0; lane < 32; ++lane)
            for (int c0 = part * 32 + lane; c0 < g.chunks; c0 += hd::kDecodeUnroll * stride)
              for (int u = 0; u < hd::kDecodeUnroll; ++u) {
                const int ch = c0 + u * stride;
                if (ch >= g.chunks) break;
                for (int r = 0; r < hd::kDecodeRows; ++r) {
                  const int64_t row = tile * hd::kDecodeRows + r;
                  if (row < c.rows) ++reads[static_cast<size_t>(row * g.chunks + ch)];
                }
              }
        }
    }
    ASSERT_EQ(next_tile, g.tiles);
    for (size_t i = 0; i < reads.size(); ++i) ASSERT_EQ(reads[i], 1) << "row " << i / g.chunks << " chunk " << i % g.chunks;
  }
}

// The decode kernels' Hadamard: the warp-register butterflies (lanes exchanging by xor shuffles)
// and the sign-mask mix give bit-identical values to the shared-memory levels (hd::ButterflyLow)
// and hd::MixOutput, i.e. to the CPU transform.
TEST(CudaTwinTest, WarpHadamardAndMaskedMixAreBitIdentical) {
  for (int m : {1, 12, 20, 28}) {
    for (int V : {1, 2, 4, 8}) {
      const int P = 32 * V, n = m * P;
      std::vector<float> ref = RandomFloat(static_cast<size_t>(n), 1000 + m * 10 + V);
      std::vector<float> warp = ref;
      int log2_half = 0;
      while ((2 << log2_half) < P) ++log2_half;
      for (int h = 1; h < P; h <<= 1)
        for (int i = 0; i < n / 2; ++i) {
          const int lo = hd::ButterflyLow(i, h, P, log2_half);
          const float a = ref[lo], b = ref[lo + h];
          ref[lo] = a + b;
          ref[lo + h] = a - b;
        }
      for (int a = 0; a < m; ++a) {
        float* chunk = warp.data() + a * P;
        for (int h = 1; h < V; h <<= 1)  // inside a lane
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < V; ++i)
              if ((i & h) == 0) {
                float* v = chunk + lane * V;
                const float lo = v[i], hi = v[i + h];
                v[i] = lo + hi;
                v[i + h] = lo - hi;
              }
        for (int k = 1; k < 32; k <<= 1) {  // across lanes: every lane reads its partner's old value
          std::vector<float> old(chunk, chunk + P);
          for (int lane = 0; lane < 32; ++lane)
            for (int i = 0; i < V; ++i)
              chunk[lane * V + i] = hd::WarpButterfly(old[lane * V + i], old[(lane ^ k) * V + i], (lane & k) == 0);
        }
      }
      for (int i = 0; i < n; ++i) ASSERT_EQ(warp[i], ref[i]) << "m " << m << " V " << V << " i " << i;
      if (m == 1) continue;
      auto small = quant::SmallHadamard(m);
      ASSERT_TRUE(small.ok());
      std::vector<int8_t> mix(static_cast<size_t>(m * m));
      for (int o = 0; o < m; ++o)
        for (int i = 0; i < m; ++i) mix[o * m + i] = (*small)[i * m + o];
      for (int o = 0; o < m; ++o) {
        const uint32_t neg = hd::MixNegMask(mix.data(), m, o);
        for (int j = 0; j < P; ++j)
          ASSERT_EQ(hd::MixOutputMasked(ref.data(), neg, m, P, j), hd::MixOutput(ref.data(), mix.data(), m, P, o, j));
      }
    }
  }
}

TEST(CudaTwinTest, Dp4aMatchesIntegerProducts) {
  const std::vector<int8_t> a = {-128, 127, -1, 5}, b = {-128, -128, 127, -7};
  EXPECT_EQ(hd::Dp4a(Int8Word(a.data()), Int8Word(b.data()), 10), 10 + 16384 - 16256 - 127 - 35);
}

TEST(CudaTwinTest, PerTokenQuantizationIsBitIdentical) {
  const int64_t rows = 37, cols = 1536;
  std::vector<float> x = RandomFloat(static_cast<size_t>(rows * cols), 5, -3.0f, 3.0f);
  // Exact ties (k + 0.5 after scaling) must round to even like std::nearbyint.
  x[3] = 0.0f;
  std::vector<int8_t> ref(x.size());
  std::vector<float> ref_s(rows);
  QuantizeRowsPerToken(x.data(), rows, cols, ref.data(), ref_s.data());
  for (int64_t r = 0; r < rows; ++r) {
    float amax = 0;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(x[r * cols + c]));
    const float s = hd::ScaleFromAbsMax(amax);
    ASSERT_EQ(s, ref_s[r]);
    const float inv = 1.0f / s;
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(hd::QuantizeValue(x[r * cols + c], inv), ref[r * cols + c]);
  }
  EXPECT_EQ(hd::QuantizeValue(2.5f, 1.0f), 2);
  EXPECT_EQ(hd::QuantizeValue(-3.5f, 1.0f), -4);
  EXPECT_EQ(hd::QuantizeValue(1000.0f, 1.0f), 127);
  EXPECT_EQ(hd::QuantizeValue(-1000.0f, 1.0f), -127);
  EXPECT_EQ(hd::ScaleFromAbsMax(0.0f), 1.0f);
}

// HadamardQuantKernel's order of operations: scale, radix-2 levels h = 1, 2, …, then the mix.
void EmulateHadamard(const quant::RandomHadamard& h, float* x) {
  const int n = static_cast<int>(h.size()), m = h.factors().m, p = h.factors().pow2;
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  for (int i = 0; i < n; ++i) x[i] *= h.signs()[i] * inv;
  int log2_half = 0;
  while ((2 << log2_half) < p) ++log2_half;
  for (int hh = 1; hh < p; hh <<= 1) {
    for (int i = 0; i < n / 2; ++i) {
      const int lo = hd::ButterflyLow(i, hh, p, log2_half);
      const float a = x[lo], b = x[lo + hh];
      x[lo] = a + b;
      x[lo + hh] = a - b;
    }
  }
  if (m == 1) return;
  auto small = quant::SmallHadamard(m);
  ASSERT_TRUE(small.ok());
  std::vector<int8_t> mix(static_cast<size_t>(m * m));
  for (int o = 0; o < m; ++o)
    for (int i = 0; i < m; ++i) mix[o * m + i] = (*small)[i * m + o];
  std::vector<float> y(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) y[i] = hd::MixOutput(x, mix.data(), m, p, i / p, i % p);
  std::copy(y.begin(), y.end(), x);
}

TEST(CudaTwinTest, HadamardKernelArithmeticIsBitIdenticalToCpu) {
  for (int64_t n : {16, 24, 128, 768, 1536, 2560, 3072, 4096, 5120}) {
    auto h = quant::RandomHadamard::Create(n, 1234 + n);
    ASSERT_TRUE(h.ok()) << n;
    std::vector<float> x = RandomFloat(static_cast<size_t>(n), n, -4.0f, 4.0f);
    std::vector<float> ref = x;
    h->ApplyRows(ref.data(), 1);
    EmulateHadamard(*h, x.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], ref[i]) << "n " << n << " index " << i;
  }
}

// HadamardQuantClusterKernel's decomposition: a token's row split over `ranks` blocks
// (row_cluster_plan.h), each running its local levels, then the mix (m > 1) or the levels that
// pair slices (m = 1) from values gathered across ranks. Must equal the CPU transform bit for bit.
void EmulateHadamardCluster(const quant::RandomHadamard& h, const hd::HadamardClusterPlan& pl, float* x) {
  const int n = static_cast<int>(h.size()), m = h.factors().m, p = h.factors().pow2;
  const int64_t L = pl.local, seg = pl.seg;
  ASSERT_EQ(L * pl.ranks, n);
  ASSERT_EQ(L % seg, 0);
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  std::vector<std::vector<float>> sx(static_cast<size_t>(pl.ranks));
  for (int r = 0; r < pl.ranks; ++r) {
    std::vector<float>& v = sx[static_cast<size_t>(r)];
    v.assign(x + r * L, x + (r + 1) * L);
    for (int64_t i = 0; i < L; ++i) v[i] *= h.signs()[r * L + i] * inv;
    int log2_half = 0;
    while ((int64_t{2} << log2_half) < seg) ++log2_half;
    for (int64_t hl = 1; hl < seg; hl <<= 1)
      for (int64_t i = 0; i < L / 2; ++i) {
        const int lo = hd::ButterflyLow(static_cast<int>(i), static_cast<int>(hl), static_cast<int>(seg), log2_half);
        const float a = v[lo], b = v[lo + hl];
        v[lo] = a + b;
        v[lo + hl] = a - b;
      }
  }
  std::vector<int> written(static_cast<size_t>(n), 0);
  if (m > 1) {
    auto small = quant::SmallHadamard(m);
    ASSERT_TRUE(small.ok());
    const int per = m / pl.ranks;
    ASSERT_EQ(per * pl.ranks, m);
    for (int r = 0; r < pl.ranks; ++r)
      for (int64_t j = 0; j < p; ++j) {
        std::vector<float> col(static_cast<size_t>(m));
        for (int i = 0; i < m; ++i) col[i] = sx[static_cast<size_t>(i / per)][(i % per) * p + j];
        for (int oo = 0; oo < per; ++oo) {
          const int o = r * per + oo;
          float acc = static_cast<float>((*small)[0 * m + o]) * col[0];
          for (int i = 1; i < m; ++i) acc += static_cast<float>((*small)[i * m + o]) * col[i];
          x[r * L + oo * p + j] = acc;
          ++written[static_cast<size_t>(r * L + oo * p + j)];
        }
      }
  } else {
    for (int r = 0; r < pl.ranks; ++r)
      for (int64_t j = 0; j < L; ++j) {
        float v[hd::kRowClusterMaxRanks] = {};
        for (int q = 0; q < pl.ranks; ++q) v[q] = sx[static_cast<size_t>(q)][j];
        hd::HadamardCrossLevels(v, pl.ranks);
        x[r * L + j] = v[r];
        ++written[static_cast<size_t>(r * L + j)];
      }
  }
  for (int i = 0; i < n; ++i) ASSERT_EQ(written[i], 1) << "element " << i;
}

TEST(CudaTwinTest, HadamardClusterDecompositionIsBitIdenticalToCpu) {
  int clustered = 0;
  for (int64_t n : {128, 768, 1536, 2048, 2560, 3072, 4096, 5120, 7168}) {
    auto h = quant::RandomHadamard::Create(n, 77 + n);
    ASSERT_TRUE(h.ok()) << n;
    for (int64_t tokens : {1, 4, 8, 19, 64, 100, 132, 256}) {
      const hd::HadamardClusterPlan pl = hd::MakeHadamardClusterPlan(tokens, n, h->factors().m, h->factors().pow2, 132);
      SCOPED_TRACE("n " + std::to_string(n) + " tokens " + std::to_string(tokens) + " ranks " + std::to_string(pl.ranks));
      if (tokens >= 132) {
        EXPECT_EQ(pl.ranks, 1);  // the tokens alone fill the GPU
        continue;
      }
      ASSERT_GE(pl.ranks, 2);
      ++clustered;
      std::vector<float> x = RandomFloat(static_cast<size_t>(n), n + tokens, -4.0f, 4.0f);
      x[3] = 30.0f;
      std::vector<float> ref = x;
      h->ApplyRows(ref.data(), 1);
      EmulateHadamardCluster(*h, pl, x.data());
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], ref[i]) << "index " << i;
    }
  }
  EXPECT_GT(clustered, 40);
}

TEST(CudaTwinTest, RowClusterPlansCoverTheRowOnce) {
  // Ranks: the smallest allowed count that fills the SMs, else the largest; 1 when tokens do.
  EXPECT_EQ(hd::RowClusterRanks(64, 132, 2 | 4 | 8), 4);
  EXPECT_EQ(hd::RowClusterRanks(8, 132, 2 | 4 | 8), 8);
  EXPECT_EQ(hd::RowClusterRanks(8, 132, 2 | 4), 4);
  EXPECT_EQ(hd::RowClusterRanks(100, 132, 2 | 4 | 8), 2);
  EXPECT_EQ(hd::RowClusterRanks(132, 132, 2 | 4 | 8), 1);
  EXPECT_EQ(hd::RowClusterRanks(3, 132, 0), 1);
  EXPECT_EQ(hd::SliceClusterRanks(64, 5120, 132), 4);
  EXPECT_EQ(hd::SliceClusterRanks(1, 384, 132), 1);  // slices under 256 channels: no split
  for (int64_t cols : {4, 36, 384, 1536, 1800, 2600, 3000, 5120, 5124, 7001}) {
    for (int ranks : {1, 2, 4, 8}) {
      std::vector<int> seen(static_cast<size_t>(cols), 0);
      int64_t prev_hi = 0;
      for (int r = 0; r < ranks; ++r) {
        int64_t lo, hi;
        hd::RowClusterSlice(cols, ranks, r, &lo, &hi);
        EXPECT_EQ(lo, prev_hi) << cols << " " << ranks << " " << r;
        EXPECT_TRUE(lo % 4 == 0 || lo == cols);
        for (int64_t c = lo; c < hi; ++c) ++seen[static_cast<size_t>(c)];
        prev_hi = hi;
      }
      EXPECT_EQ(prev_hi, cols);
      int64_t most = 0;
      for (int r = 0; r < ranks; ++r) {
        int64_t lo, hi;
        hd::RowClusterSlice(cols, ranks, r, &lo, &hi);
        most = std::max(most, hi - lo);
      }
      EXPECT_EQ(hd::RowClusterMaxSlice(cols, ranks), most) << cols << " " << ranks;
      for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(seen[static_cast<size_t>(c)], 1) << cols << " " << ranks;
    }
  }
}

// SelectiveScanKernel's decomposition: a channel's 16 states on kTpc lanes × kNpt, partial sums
// combined by xor-shuffles; Δ = softplus(Δ_raw + bias), y = (Σ + D·u)·SiLU(z). kNpt = 16 (one
// lane a channel, no shuffle) is also SelectiveScanStepKernel's decode step.
template <int kNpt>
void CheckScanDecomposition(int64_t L) {
  constexpr int kTpc = 16 / kNpt;
  const int64_t B = 2, E = 24, N = 16;
  const float log2e = 1.4426950408889634f;
  std::vector<float> u = RandomFloat(B * L * E, 1), draw = RandomFloat(B * L * E, 2, -4, 1), z = RandomFloat(B * L * E, 3);
  std::vector<float> bc = RandomFloat(B * L * 2 * N, 4), A = RandomFloat(E * N, 5, -8, -0.5f), D = RandomFloat(E, 6);
  std::vector<float> bias = RandomFloat(E, 7, -1, 0), h0 = RandomFloat(B * E * N, 8);
  std::vector<float> delta(draw.size());
  for (size_t i = 0; i < delta.size(); ++i) delta[i] = hd::Softplus(draw[i] + bias[i % E]);
  // Reference: the CPU scan, then the gate.
  std::vector<float> h_ref = h0, y_ref(B * L * E);
  cpu::SelectiveScanParams sp;
  sp.batch = B, sp.seqlen = L, sp.channels = E, sp.state = N, sp.u = u.data(), sp.delta = delta.data();
  sp.A = A.data(), sp.B = bc.data(), sp.C = bc.data() + N, sp.bc_stride = 2 * N, sp.D = D.data();
  sp.h = h_ref.data(), sp.y = y_ref.data();
  cpu::SelectiveScan(sp);
  for (size_t i = 0; i < y_ref.size(); ++i) y_ref[i] *= hd::Silu(z[i]);
  // Twin.
  std::vector<float> h = h0;
  double num = 0, den = 0;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t c = 0; c < E; ++c) {
      float a2[kTpc][kNpt];
      for (int g = 0; g < kTpc; ++g)
        for (int k = 0; k < kNpt; ++k) a2[g][k] = A[c * N + g * kNpt + k] * log2e;
      for (int64_t l = 0; l < L; ++l) {
        const int64_t r = b * L + l;
        const float dt = delta[r * E + c], uu = u[r * E + c];
        float part[kTpc];
        for (int g = 0; g < kTpc; ++g)
          part[g] = hd::ScanStep<kNpt>(&h[(b * E + c) * N + g * kNpt], a2[g], dt, dt * uu, &bc[r * 2 * N + g * kNpt],
                                       &bc[r * 2 * N + N + g * kNpt]);
        for (int o = kTpc / 2; o > 0; o >>= 1) {
          float next[kTpc];
          for (int g = 0; g < kTpc; ++g) next[g] = part[g] + part[g ^ o];
          std::copy(next, next + kTpc, part);
        }
        const float y = (part[0] + D[c] * uu) * hd::Silu(z[r * E + c]);
        num += (y - y_ref[r * E + c]) * (y - y_ref[r * E + c]);
        den += y_ref[r * E + c] * y_ref[r * E + c];
      }
    }
  }
  EXPECT_LT(std::sqrt(num / den), 1e-5);
  double hn = 0, hd_ = 0;
  for (size_t i = 0; i < h.size(); ++i) hn += (h[i] - h_ref[i]) * (h[i] - h_ref[i]), hd_ += h_ref[i] * h_ref[i];
  EXPECT_LT(std::sqrt(hn / hd_), 1e-5);
}

TEST(CudaTwinTest, ScanDecompositionMatchesCpuScan) {
  CheckScanDecomposition<2>(37);
  CheckScanDecomposition<4>(37);
  CheckScanDecomposition<16>(1);   // the decode step kernel
  CheckScanDecomposition<16>(37);
}

// SelectiveScanStepwiseKernel (scope `full`): per step hd::ScanStep on all 16 states, then
// hd::StateOutputProduct (h·R4, INT8 h per channel and C per step, int32 product) against the CPU's
// ScanStepwise with the same options.
TEST(CudaTwinTest, StepwiseScanMatchesCpuScopeFullScan) {
  const int64_t B = 2, L = 29, E = 16, N = 16;
  const float log2e = 1.4426950408889634f;
  std::vector<float> u = RandomFloat(B * L * E, 21), delta = RandomFloat(B * L * E, 22, 0.01f, 0.5f);
  std::vector<float> bc = RandomFloat(B * L * 2 * N, 23), A = RandomFloat(E * N, 24, -8, -0.5f), D = RandomFloat(E, 25);
  std::vector<float> h0 = RandomFloat(B * E * N, 26);
  auto had = quant::RandomHadamard::CreatePlain(N);
  ASSERT_TRUE(had.ok());
  const std::vector<double> r4d = had->Dense();
  const std::vector<float> r4(r4d.begin(), r4d.end());
  for (int variant = 0; variant < 3; ++variant) {
    const bool quantize = variant != 1, rotate = variant != 2;
    std::vector<float> h_ref = h0, y_ref(B * L * E);
    cpu::SelectiveScanParams sp;
    sp.batch = B, sp.seqlen = L, sp.channels = E, sp.state = N, sp.u = u.data(), sp.delta = delta.data();
    sp.A = A.data(), sp.B = bc.data(), sp.C = bc.data() + N, sp.bc_stride = 2 * N, sp.D = D.data();
    sp.h = h_ref.data(), sp.y = y_ref.data();
    sp.quantize_output_product = quantize, sp.state_scale_per_channel = true;
    sp.state_rotation = rotate ? r4.data() : nullptr;
    cpu::SelectiveScan(sp);
    std::vector<float> h = h0;
    double num = 0, den = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t c = 0; c < E; ++c) {
        float a2[16];
        for (int n = 0; n < N; ++n) a2[n] = A[c * N + n] * log2e;
        float* hc = &h[(b * E + c) * N];
        for (int64_t l = 0; l < L; ++l) {
          const int64_t r = b * L + l;
          const float dt = delta[r * E + c], uu = u[r * E + c];
          hd::ScanStep<16>(hc, a2, dt, dt * uu, &bc[r * 2 * N], &bc[r * 2 * N + N]);
          const float y = hd::StateOutputProduct<16>(hc, rotate ? r4.data() : nullptr, &bc[r * 2 * N + N], quantize) +
                          D[c] * uu;
          num += (y - y_ref[r * E + c]) * (y - y_ref[r * E + c]);
          den += y_ref[r * E + c] * y_ref[r * E + c];
        }
      }
    // exp2 vs exp moves h by ~1e-7; an INT8 code can flip at a rounding boundary, no more.
    EXPECT_LT(std::sqrt(num / den), quantize ? 2e-3 : 1e-5) << "variant " << variant;
  }
}

// CausalConvKernel + ConvStateUpdateKernel index maps: a sequence fed as prefill chunks of any
// length (shorter than K−1 too) and single decode steps gives the outputs and final state of one
// pass over the whole sequence.
TEST(CudaTwinTest, ConvStateBookkeepingMatchesOnePass) {
  const int64_t E = 5, K = 4, S = K - 1, total = 23;
  std::vector<float> w = RandomFloat(E * K, 11), bias = RandomFloat(E, 12), x = RandomFloat(total * E, 13);
  // One pass from a zero state.
  std::vector<float> ref(total * E);
  for (int64_t c = 0; c < E; ++c)
    for (int64_t t = 0; t < total; ++t) {
      float acc = bias[c];
      for (int64_t k = 0; k < K; ++k) {
        const int64_t pos = t + k - S;
        acc += w[c * K + k] * (pos >= 0 ? x[pos * E + c] : 0.0f);
      }
      ref[t * E + c] = hd::Silu(acc);
    }
  // Chunked as the kernels see it.
  std::vector<float> st(E * S, 0.0f), got(total * E);
  int64_t t0 = 0;
  for (int64_t L : {5, 1, 2, 1, 1, 7, 1, 2, 3}) {
    for (int64_t l = 0; l < L; ++l)
      for (int64_t c = 0; c < E; ++c) {
        float acc = bias[c];
        float window[8];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t i = l + k;
          window[k] = i < S ? st[c * S + i] : x[(t0 + i - S) * E + c];
          acc += w[c * K + k] * window[k];
        }
        got[(t0 + l) * E + c] = hd::Silu(acc);
        if (L == 1)
          for (int64_t s = 0; s < S; ++s) st[c * S + s] = window[s + 1];
      }
    if (L > 1)
      for (int64_t c = 0; c < E; ++c)
        for (int64_t s = 0; s < S; ++s) {
          const int64_t idx = L + s;
          st[c * S + s] = idx < S ? st[c * S + idx] : x[(t0 + idx - S) * E + c];
        }
    t0 += L;
  }
  ASSERT_EQ(t0, total);
  for (int64_t i = 0; i < total * E; ++i) EXPECT_NEAR(got[i], ref[i], 1e-6) << i;
  for (int64_t c = 0; c < E; ++c)
    for (int64_t s = 0; s < S; ++s) EXPECT_EQ(st[c * S + s], x[(total - S + s) * E + c]);
}

TEST(CudaTwinTest, StateSlotAllocatorBookkeeping) {
  StateSlotAllocator a(4);
  EXPECT_EQ(a.scratch_slot(), 4);
  EXPECT_EQ(a.free_count(), 4);
  std::vector<int32_t> got;
  for (int i = 0; i < 4; ++i) {
    auto s = a.Acquire();
    ASSERT_TRUE(s.ok());
    got.push_back(*s);
  }
  EXPECT_EQ(got, (std::vector<int32_t>{0, 1, 2, 3}));
  EXPECT_EQ(a.Acquire().status().code(), StatusCode::kResourceExhausted);
  ASSERT_TRUE(a.Release(1).ok());
  EXPECT_EQ(a.Release(1).code(), StatusCode::kFailedPrecondition);
  EXPECT_EQ(a.Release(9).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(*a.Acquire(), 1);  // lowest free slot is reused
  ASSERT_TRUE(a.Release(2).ok());
  auto batch = a.BatchSlots({3, 0, 1}, DecodeBucket(3, 64));
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(*batch, (std::vector<int32_t>{3, 0, 1, 4}));  // padded with the scratch slot
  EXPECT_FALSE(a.BatchSlots({2}, 1).ok());                // released slot
  EXPECT_FALSE(a.BatchSlots({0, 0}, 2).ok());             // repeated
  EXPECT_FALSE(a.BatchSlots({0, 1, 3}, 2).ok());          // does not fit
  EXPECT_EQ(DecodeBucket(1, 64), 1);
  EXPECT_EQ(DecodeBucket(5, 64), 8);
  EXPECT_EQ(DecodeBucket(64, 64), 64);
  EXPECT_EQ(DecodeBucket(40, 48), 48);
}

}  // namespace
}  // namespace mq::cuda
