// CPU twins of the packed-int4 kernels (cuda/int4_gemv_kernel.cu, and decode_kernels.cu's packed
// layer-kernel GEMVs): the same arithmetic
// (cuda/int4_math.h compiled here as plain C++, the byte permutes emulated as PTX defines them),
// the same blocking and index maps, run on the host against the CPU INT8 reference. These run in
// CI, which has no GPU; tests/engine/cuda_int4_gpu_test.cc runs the kernels, one GPU test per
// twin here.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/hd_math.h"
#include "cuda/int4_math.h"
#include "model/int4_pack.h"
#include "cpu/mamba_forward.h"
#include "model/linear.h"
#include "quant/quantize_pipeline.h"
#include "test_paths.h"
#include "tiny_quant_options.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::Int8Word;
using testing::LeWord;

std::vector<int8_t> RandomLevels(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(-7, 7);
  std::vector<int8_t> q(n);
  for (auto& v : q) v = static_cast<int8_t>(level(rng));
  return q;
}

// [out, k] levels → [out, kp] int8 rows zero-padded, as the INT8 upload (PadInt8) lays them out.
std::vector<int8_t> PadRows(const std::vector<int8_t>& q, int64_t out, int64_t k, int64_t kp) {
  std::vector<int8_t> p(static_cast<size_t>(out * kp), 0);
  for (int64_t r = 0; r < out; ++r) std::copy_n(q.begin() + r * k, k, p.begin() + r * kp);
  return p;
}

// Twin of LaunchUnpackInt4 / UnpackInt4Kernel: word i of the packed buffer → int8 words 2i, 2i+1.
std::vector<int8_t> EmulateUnpack(const std::vector<uint8_t>& packed, int64_t rows, int64_t ld) {
  std::vector<int8_t> out(static_cast<size_t>(rows * ld));
  for (int64_t i = 0; i < rows * ld / 8; ++i) {
    int32_t a, b;
    hd::UnpackInt4Word(LeWord(packed.data() + 4 * i), &a, &b);
    std::memcpy(out.data() + 8 * i, &a, 4);
    std::memcpy(out.data() + 8 * i + 4, &b, 4);
  }
  return out;
}

// Twin of Int4GemvKernel, lane by lane: hd::GemvLayout over 16-element chunks, an 8-byte packed
// chunk per (lane, chunk) unpacked by hd::Int4Dot16 against the 16 activations, group and k-split
// reductions in the kernel's order. Every chunk of every row must be read exactly once.
void EmulateInt4Gemv(const std::vector<uint8_t>& w, const std::vector<int8_t>& x, int64_t out, int64_t kp, int64_t tokens,
                     std::vector<int32_t>* acc, std::vector<int>* reads) {
  const hd::GemvLayout l = hd::ChooseGemvLayout(kp, out);
  ASSERT_EQ(32 % l.group, 0);
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
        const uint8_t* wrow = w.data() + row * (kp / 2);
        for (int64_t it = 0; it < l.iters; ++it) {
          const int64_t ch = hd::GemvChunk(l, kpart, gl, it);
          if (ch >= l.chunks) continue;
          ++(*reads)[row * l.chunks + ch];
          const uint32_t w0 = LeWord(wrow + ch * 8), w1 = LeWord(wrow + ch * 8 + 4);
          for (int64_t t = 0; t < tokens; ++t) {
            const int8_t* xc = x.data() + t * kp + ch * 16;
            int32_t& a = (*acc)[t * out + row];
            a = hd::Int4Dot16(w0, w1, Int8Word(xc), Int8Word(xc + 4), Int8Word(xc + 8), Int8Word(xc + 12), a);
          }
        }
      }
    }
  }
}

TEST(CudaInt4TwinTest, UnpackWordMatchesThePackedLayoutForEveryNibble) {
  // Every byte value in every byte position (the others random), and random words.
  std::mt19937 rng(7);
  std::vector<uint32_t> words;
  for (int pos = 0; pos < 4; ++pos)
    for (uint32_t v = 0; v < 256; ++v) words.push_back((rng() & ~(0xffu << (8 * pos))) | (v << (8 * pos)));
  for (int i = 0; i < 4096; ++i) words.push_back(rng());
  for (uint32_t w : words) {
    int32_t a, b;
    hd::UnpackInt4Word(w, &a, &b);
    int8_t got[8];
    std::memcpy(got, &a, 4);
    std::memcpy(got + 4, &b, 4);
    for (int e = 0; e < 8; ++e) {
      const uint8_t nibble = (w >> (4 * e)) & 0xF;  // element e: byte e/2, low nibble for even e
      ASSERT_EQ(got[e], Int4Decode(nibble)) << std::hex << "word 0x" << w << " element " << e;
    }
  }
}

TEST(CudaInt4TwinTest, UnpackKernelEqualsTheInt8UploadOfTheSameLevels) {
  for (const auto& [rows, k] : std::vector<std::pair<int64_t, int64_t>>{{3, 5}, {36, 128}, {128, 4}, {17, 37}, {768, 24}}) {
    const int64_t kp = hd::RoundUp(k, 16);
    const std::vector<int8_t> q = RandomLevels(static_cast<size_t>(rows * k), rows * 31 + k);
    auto packed = PackInt4Rows(q.data(), rows, k, kp / 2);
    ASSERT_TRUE(packed.ok());
    EXPECT_EQ(EmulateUnpack(*packed, rows, kp), PadRows(q, rows, k, kp)) << rows << "x" << k;
  }
}

TEST(CudaInt4TwinTest, Int4GemvBlockingCoversEveryChunkAndEqualsTheInt8Products) {
  // (out, k) of the fixtures' and the family's linears, and odd widths (padded to 16).
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {256, 64},   {36, 128},    {128, 4},    {64, 128},                  // tiny
      {1536, 384}, {56, 768},    {768, 24},   {384, 768},                 // small
      {3072, 768}, {80, 1536},   {1536, 48},  {768, 1536},                // 130m
      {10240, 2560}, {192, 5120}, {5120, 160}, {2560, 5120},              // 2.8b
      {7, 5},      {33, 37},     {100, 1001}};                            // odd
  for (const auto& [out, k] : shapes) {
    const int64_t kp = hd::RoundUp(k, 16);
    for (int64_t tokens : {1, 3}) {
      const std::vector<int8_t> q = RandomLevels(static_cast<size_t>(out * k), out * 7 + k);
      auto packed = PackInt4Rows(q.data(), out, k, kp / 2);
      ASSERT_TRUE(packed.ok());
      std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * kp), k * 3 + tokens);
      for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * kp + k, x.begin() + (t + 1) * kp, 0);
      std::vector<int32_t> acc;
      std::vector<int> reads;
      EmulateInt4Gemv(*packed, x, out, kp, tokens, &acc, &reads);
      for (int r : reads) ASSERT_EQ(r, 1) << "out " << out << " k " << k;
      std::vector<int32_t> ref(static_cast<size_t>(tokens * out));
      const std::vector<int8_t> w8 = PadRows(q, out, k, kp);
      Int8MatMulTransposedB(x.data(), w8.data(), ref.data(), tokens, kp, out);
      ASSERT_EQ(acc, ref) << "out " << out << " k " << k << " tokens " << tokens;
    }
  }
}

// Twin of the packed layer kernels' GEMV (decode_kernels.cu BlockGemv with kW4, and kernel 3's
// dt_proj row): the INT8 plan over ld-element rows (hd::MakeDecodeGemvPlan with ld bytes), blocks →
// tiles → warp tasks → lanes, hd::kDecodeInt4Unroll chunks in flight, chunk c of row r loaded as
// the 8 bytes at r·ld/2 + c·8 and unpacked by hd::Int4Dot16 against activation bytes c·16..c·16+15.
// Every chunk of every row is read once and the sums equal the CPU's on the unpacked levels.
void EmulatePackedDecodeGemv(const std::vector<uint8_t>& w, const std::vector<int8_t>& x, int64_t out, int64_t ld,
                             int64_t tokens, int64_t max_blocks, std::vector<int32_t>* acc) {
  const hd::DecodeGemvPlan g = hd::MakeDecodeGemvPlan(out, ld, max_blocks, 24 << 20);
  ASSERT_EQ(g.chunks, ld / 16);
  acc->assign(static_cast<size_t>(tokens * out), 0);
  std::vector<int> reads(static_cast<size_t>(out * g.chunks), 0);
  const int64_t row_bytes = ld / 2;
  for (int64_t blk = 0; blk < g.grid; ++blk) {
    int64_t t0;
    int n;
    hd::DecodeBlockTiles(g, blk, &t0, &n);
    for (int warp = 0; warp < hd::kDecodeWarps; ++warp)
      for (int task = warp; task < n * g.parts; task += hd::kDecodeWarps) {
        const int64_t row0 = (t0 + task / g.parts) * hd::kDecodeRows;
        const int part = task % g.parts, stride = 32 * g.parts;
        for (int lane = 0; lane < 32; ++lane)
          for (int c0 = part * 32 + lane; c0 < g.chunks; c0 += hd::kDecodeInt4Unroll * stride)
            for (int u = 0; u < hd::kDecodeInt4Unroll; ++u) {
              const int c = c0 + u * stride;
              if (c >= g.chunks) break;
              for (int r = 0; r < hd::kDecodeRows; ++r) {
                const int64_t row = row0 + r;
                if (row >= out) continue;
                ++reads[static_cast<size_t>(row * g.chunks + c)];
                const uint8_t* wc = w.data() + row * row_bytes + static_cast<int64_t>(c) * 8;
                for (int64_t t = 0; t < tokens; ++t) {
                  const int8_t* xc = x.data() + t * ld + static_cast<int64_t>(c) * 16;
                  int32_t& a = (*acc)[static_cast<size_t>(t * out + row)];
                  a = hd::Int4Dot16(LeWord(wc), LeWord(wc + 4), Int8Word(xc), Int8Word(xc + 4), Int8Word(xc + 8), Int8Word(xc + 12), a);
                }
              }
            }
      }
  }
  for (size_t i = 0; i < reads.size(); ++i) ASSERT_EQ(reads[i], 1) << "row " << i / g.chunks << " chunk " << i % g.chunks;
}

// Kernel 3 (DtScanKernel): four lanes a channel, lane q reading chunks q, q + 4, … of the channel's
// packed dt_proj row (8 bytes at c·ld/2 + ch·8), the four partial sums added by two xor shuffles.
void EmulatePackedDtProj(const std::vector<uint8_t>& w, const std::vector<int8_t>& x, int64_t E, int64_t ld, int64_t tokens,
                         std::vector<int32_t>* acc) {
  acc->assign(static_cast<size_t>(tokens * E), 0);
  const int chunks = static_cast<int>(ld / 16);
  for (int64_t c = 0; c < E; ++c)
    for (int64_t t = 0; t < tokens; ++t) {
      int32_t part[4] = {0, 0, 0, 0};
      for (int q = 0; q < 4; ++q)
        for (int ch = q; ch < chunks; ch += 4) {
          const uint8_t* wc = w.data() + c * (ld / 2) + ch * 8;
          const int8_t* xc = x.data() + t * ld + ch * 16;
          part[q] = hd::Int4Dot16(LeWord(wc), LeWord(wc + 4), Int8Word(xc), Int8Word(xc + 4), Int8Word(xc + 8), Int8Word(xc + 12), part[q]);
        }
      const int32_t p01 = part[0] + part[2], p23 = part[1] + part[3];  // xor 2, then xor 1
      (*acc)[static_cast<size_t>(t * E + c)] = p01 + p23;
    }
}

TEST(CudaInt4TwinTest, PackedLayerKernelGemvEqualsTheInt8Products) {
  // (out, k) of the layer kernels' GEMVs (in_proj, x_proj, out_proj; dt_proj below) for the
  // fixture and family widths, and odd ones; grids of the H100's 2·132 blocks, x_proj's 64, and
  // a small one (more tiles a block).
  struct Case { int64_t out, k, max_blocks; };
  const std::vector<Case> cases = {{256, 64, 264},   {36, 128, 64},    {64, 128, 264},    {3072, 768, 264},
                                   {80, 1536, 64},   {768, 1536, 264}, {10240, 2560, 264}, {192, 5120, 64},
                                   {2560, 5120, 264}, {7, 5, 264},     {33, 37, 3},        {100, 1001, 5}};
  for (const Case& c : cases) {
    const int64_t ld = hd::RoundUp(c.k, 16);
    const std::vector<int8_t> q = RandomLevels(static_cast<size_t>(c.out * c.k), c.out * 5 + c.k);
    auto packed = PackInt4Rows(q.data(), c.out, c.k, ld / 2);
    ASSERT_TRUE(packed.ok());
    const std::vector<int8_t> w8 = PadRows(q, c.out, c.k, ld);
    for (int64_t tokens : {1, 3, 8}) {
      if (c.out * c.k > 4'000'000 && tokens > 1) continue;  // the host emulation's time
      std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * ld), c.k * 11 + tokens);
      for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * ld + c.k, x.begin() + (t + 1) * ld, 0);
      std::vector<int32_t> acc, ref(static_cast<size_t>(tokens * c.out));
      EmulatePackedDecodeGemv(*packed, x, c.out, ld, tokens, c.max_blocks, &acc);
      if (HasFatalFailure()) return;
      Int8MatMulTransposedB(x.data(), w8.data(), ref.data(), tokens, ld, c.out);
      ASSERT_EQ(acc, ref) << "out " << c.out << " k " << c.k << " tokens " << tokens;
    }
  }
  // dt_proj: [E, R] for the fixture, 130m, 2.8b, and rows longer than kernel 3 keeps in registers.
  for (const auto& [E, R] : std::vector<std::pair<int64_t, int64_t>>{{128, 4}, {1536, 48}, {5120, 160}, {64, 600}}) {
    const int64_t ld = hd::RoundUp(R, 16);
    const std::vector<int8_t> q = RandomLevels(static_cast<size_t>(E * R), E + R);
    auto packed = PackInt4Rows(q.data(), E, R, ld / 2);
    ASSERT_TRUE(packed.ok());
    const int64_t tokens = 3;
    std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * ld), R);
    for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * ld + R, x.begin() + (t + 1) * ld, 0);
    std::vector<int32_t> acc, ref(static_cast<size_t>(tokens * E));
    EmulatePackedDtProj(*packed, x, E, ld, tokens, &acc);
    Int8MatMulTransposedB(x.data(), PadRows(q, E, R, ld).data(), ref.data(), tokens, ld, E);
    ASSERT_EQ(acc, ref) << "dt_proj E " << E << " R " << R;
  }
}

// What the GPU test W4A8ModelEqualsTheInt8PathOnTheSameWeights relies on, on a real W4A8 model
// (MambaQuant on mamba-tiny): every linear as the W4A8 upload packs it (rows padded to 16) reaches
// the GEMV and the unpack kernel as exactly the INT8 upload's weights, so the accumulators and
// everything after them equal the INT8 path's.
TEST(CudaInt4TwinTest, W4A8ModelLinearsReachTheKernelsAsTheInt8PathsWeights) {
  quant::QuantizeOptions o = testing::TinyQuantOptions("w4a8");
  auto build = quant::BuildQuantizedModel(o, nullptr);
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  int checked = 0;
  for (const auto& L : build->model.layers) {
    for (const Linear* l : {&L.in_proj, &L.x_proj, &L.dt_proj, &L.out_proj}) {
      ASSERT_TRUE(l->quant.has_value());
      ASSERT_EQ(l->quant->weight_bits, 4);
      const int64_t out = l->out_features, k = l->in_features, kp = hd::RoundUp(k, 16);
      auto packed = PackInt4Rows(l->quant->qweight.data(), out, k, kp / 2);
      ASSERT_TRUE(packed.ok());
      const std::vector<int8_t> w8 = PadRows(l->quant->qweight, out, k, kp);
      ASSERT_EQ(EmulateUnpack(*packed, out, kp), w8);
      const int64_t tokens = 3;
      std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * kp), out + k);
      for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * kp + k, x.begin() + (t + 1) * kp, 0);
      std::vector<int32_t> acc, ref(static_cast<size_t>(tokens * out));
      std::vector<int> reads;
      EmulateInt4Gemv(*packed, x, out, kp, tokens, &acc, &reads);
      Int8MatMulTransposedB(x.data(), w8.data(), ref.data(), tokens, kp, out);
      ASSERT_EQ(acc, ref);
      ++checked;
    }
  }
  EXPECT_EQ(checked, 4 * static_cast<int>(build->model.layers.size()));
}

// Twin of CudaInt4GpuTest.MixedWidthModelEqualsTheInt8PathOnTheSameWeights: the CPU reference
// runs a w4a8 model with layer 1 at 8-bit weights bit-identical to the same levels all declared
// 8-bit (per-layer widths change only how the levels are stored, not what is computed), for a
// prefill and decode steps.
TEST(CudaInt4TwinTest, MixedWidthModelEqualsTheInt8PathOnTheCpu) {
  quant::QuantizeOptions o = testing::TinyQuantOptions("w4a8");
  o.w8_layers = {1};
  auto build = quant::BuildQuantizedModel(o, nullptr);
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  const MambaWeights& mixed = build->model;
  for (const Linear* l : {&mixed.layers[0].in_proj, &mixed.layers[0].out_proj}) EXPECT_EQ(l->quant->weight_bits, 4);
  for (const Linear* l : {&mixed.layers[1].in_proj, &mixed.layers[1].out_proj}) EXPECT_EQ(l->quant->weight_bits, 8);
  MambaWeights w8 = mixed;
  for (auto& L : w8.layers)
    for (Linear* l : {&L.in_proj, &L.x_proj, &L.dt_proj, &L.out_proj}) l->quant->weight_bits = 8;
  const int64_t B = 3, L = 21, V = mixed.config.vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(B * L));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 131 + 5) % V);
  cpu::MambaState sa = cpu::MambaState::Zeros(mixed.config, B), sb = cpu::MambaState::Zeros(mixed.config, B);
  std::vector<float> la, lb;
  ASSERT_TRUE(cpu::MambaForward(mixed, ids.data(), B, L, &sa, &la).ok());
  ASSERT_TRUE(cpu::MambaForward(w8, ids.data(), B, L, &sb, &lb).ok());
  ASSERT_EQ(la.size(), lb.size());
  EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * 4), 0) << "prefill";
  for (int step = 0; step < 3; ++step) {
    std::vector<int32_t> next(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) next[b] = static_cast<int32_t>((7 + 13 * b + 29 * step) % V);
    ASSERT_TRUE(cpu::MambaForward(mixed, next.data(), B, 1, &sa, &la).ok());
    ASSERT_TRUE(cpu::MambaForward(w8, next.data(), B, 1, &sb, &lb).ok());
    EXPECT_EQ(std::memcmp(la.data(), lb.data(), la.size() * 4), 0) << "decode step " << step;
  }
}

}  // namespace
}  // namespace mq::cuda
