// The recurrent-state cache dtype (model/state_dtype.h): the fp16/bf16/int8 stores checked against
// independent computations, the CPU reference's rounding in MambaForward (fp32 untouched; a
// narrower dtype = the fp32 step followed by the store), and its cost on mamba-tiny decode steps
// and on the decode-step perplexity through the CPU serving backend. The same functions run in the
// CUDA kernels (the GPU test compares the device's stored state to them), so this is also the
// kernels' CPU twin in CI.
#include "model/state_dtype.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "cpu/mamba_forward.h"
#include "eval/perplexity.h"
#include "model/mamba_weights.h"
#include "serve/cpu_sequence_backend.h"
#include "test_paths.h"
#include "test_util.h"

#include <nlohmann/json.hpp>

namespace mq {
namespace {

using state::Bf16BitsToFloat;
using state::FloatToBf16Bits;
using state::FloatToHalfBits;
using state::HalfBitsToFloat;

float FromBits(uint32_t u) {
  float x;
  std::memcpy(&x, &u, 4);
  return x;
}
uint32_t ToBits(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
}

// binary16 value from its fields, by the format's definition (double arithmetic).
double HalfValue(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double mag = e == 0 ? std::ldexp(m, -24) : std::ldexp(1024 + m, e - 25);
  return (h & 0x8000) ? -mag : mag;
}

// Nearest binary16 to x (finite), ties to the even bit pattern, by search over the ordered
// non-negative patterns 0 … 0x7bff; beyond 65504 + half an ulp (65520) it is inf.
uint16_t NearestHalf(float x) {
  const double a = std::fabs(static_cast<double>(x));
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  if (a >= 65520.0) return sign | 0x7c00;
  uint16_t lo = 0, hi = 0x7bff;  // largest pattern with value ≤ a
  while (lo < hi) {
    const uint16_t mid = static_cast<uint16_t>((lo + hi + 1) / 2);
    if (HalfValue(mid) <= a) lo = mid;
    else hi = static_cast<uint16_t>(mid - 1);
  }
  uint16_t best = lo;
  if (lo < 0x7bff || a > 65504.0) {
    const uint16_t up = static_cast<uint16_t>(lo + 1);
    const double dl = a - HalfValue(lo), du = HalfValue(up) - a;
    if (du < dl || (du == dl && (up & 1) == 0)) best = up;
  }
  return sign | best;
}

// Nearest bfloat16 to x: the two truncations around it, ties to the even pattern; the one above
// the largest finite value is inf, at distance one ulp as the rounding rule sees it.
uint16_t NearestBf16(float x) {
  const uint32_t u = ToBits(x);
  const uint16_t down = static_cast<uint16_t>(u >> 16);
  if ((u & 0xffffu) == 0) return down;
  const uint16_t up = static_cast<uint16_t>(down + 1);  // away from zero in magnitude
  const int e = (down >> 7) & 0xff;
  const double ulp = std::ldexp(1.0, (e == 0 ? 1 : e) - 127 - 7);
  const double a = std::fabs(static_cast<double>(x));
  const double vd = std::fabs(static_cast<double>(Bf16BitsToFloat(down)));
  const double dd = a - vd, du = vd + ulp - a;
  return du < dd || (du == dd && (up & 1) == 0) ? up : down;
}

std::vector<float> TestFloats(uint64_t seed, int n) {
  std::mt19937_64 g(seed);
  std::vector<float> v = {0.0f, -0.0f, 1.0f, -1.0f, 65504.0f, 65519.99f, 65520.0f, 1e-8f, 5.9604645e-8f, 2.9802322e-8f,
                          6.1035156e-5f, 6.1e-5f, 3.0e38f, -3.0e38f, 1e-40f};
  // Every tie between consecutive binary16 values and the floats just around it.
  for (uint32_t h = 0; h < 0x7bff; h += 7) {
    const float mid = static_cast<float>((HalfValue(static_cast<uint16_t>(h)) + HalfValue(static_cast<uint16_t>(h + 1))) / 2);
    v.push_back(mid), v.push_back(std::nextafter(mid, 0.0f)), v.push_back(std::nextafter(mid, 1e30f));
    v.push_back(-mid);
  }
  std::uniform_int_distribution<uint32_t> bits;
  for (int i = 0; i < n; ++i) {
    const float x = FromBits(bits(g));
    if (std::isfinite(x)) v.push_back(x);
  }
  std::normal_distribution<float> nd(0.0f, 3.0f);
  for (int i = 0; i < n; ++i) v.push_back(nd(g));
  return v;
}

TEST(StateDtype, NamesParseAndRejectOthers) {
  for (StateDtype d : {StateDtype::kF32, StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8}) {
    auto p = ParseStateDtype(StateDtypeName(d));
    ASSERT_TRUE(p.ok());
    EXPECT_EQ(*p, d);
  }
  EXPECT_EQ(state::DtypeBytes(StateDtype::kF32), 4);
  EXPECT_EQ(state::DtypeBytes(StateDtype::kF16), 2);
  EXPECT_EQ(state::DtypeBytes(StateDtype::kBF16), 2);
  EXPECT_EQ(state::DtypeBytes(StateDtype::kInt8), 1);
  for (const char* bad : {"", "float32", "FP16", "int4", "fp8"}) {
    auto p = ParseStateDtype(bad);
    ASSERT_FALSE(p.ok()) << bad;
    EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
    EXPECT_NE(p.status().message().find("fp32, fp16, bf16 or int8"), std::string::npos);
  }
}

TEST(StateDtype, HalfDecodeMatchesTheFormatForEveryPattern) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const uint16_t b = static_cast<uint16_t>(h);
    const int e = (b >> 10) & 0x1f;
    const float x = HalfBitsToFloat(b);
    if (e == 31) {
      EXPECT_EQ(std::isnan(x), (b & 0x3ff) != 0) << h;
      if ((b & 0x3ff) == 0) EXPECT_TRUE(std::isinf(x)) << h;
      continue;
    }
    ASSERT_EQ(static_cast<double>(x), HalfValue(b)) << h;
    ASSERT_EQ(FloatToHalfBits(x), b) << h;  // every finite half survives the round trip
  }
}

TEST(StateDtype, HalfEncodeIsRoundToNearestEven) {
  for (float x : TestFloats(1, 200000)) ASSERT_EQ(FloatToHalfBits(x), NearestHalf(x)) << x;
  EXPECT_EQ(FloatToHalfBits(std::numeric_limits<float>::infinity()), 0x7c00);
  EXPECT_EQ(FloatToHalfBits(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_TRUE(std::isnan(HalfBitsToFloat(FloatToHalfBits(std::nanf("")))));
}

TEST(StateDtype, Bf16EncodeIsRoundToNearestEven) {
  for (float x : TestFloats(2, 200000)) {
    const uint16_t b = FloatToBf16Bits(x);
    ASSERT_EQ(b, NearestBf16(x)) << x;
    ASSERT_EQ(ToBits(Bf16BitsToFloat(b)), static_cast<uint32_t>(b) << 16);
  }
  EXPECT_TRUE(std::isnan(Bf16BitsToFloat(FloatToBf16Bits(std::nanf("")))));
}

// int8 rows: scale = max|x|/127, codes within half a step of x/scale (ties to even), the maximum
// at ±127, and the row read back within half a step.
TEST(StateDtype, Int8RowsQuantizeByTheirMaximum) {
  std::mt19937_64 g(3);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  for (int M : {3, 16}) {
    for (int trial = 0; trial < 2000; ++trial) {
      std::vector<float> x(static_cast<size_t>(M));
      const float mag = std::ldexp(1.0f, trial % 40 - 20);
      for (float& v : x) v = nd(g) * mag;
      if (trial % 97 == 0) std::fill(x.begin(), x.end(), 0.0f);
      std::vector<int8_t> q(static_cast<size_t>(M));
      float s = -1.0f;
      state::StoreRow(StateDtype::kInt8, x.data(), M, q.data(), 0, &s);
      double amax = 0;
      for (float v : x) amax = std::max(amax, std::fabs(static_cast<double>(v)));
      if (amax == 0) {
        EXPECT_EQ(s, 1.0f);
        for (int8_t c : q) EXPECT_EQ(c, 0);
        continue;
      }
      EXPECT_EQ(s, static_cast<float>(amax) / 127.0f);
      bool at_max = false;
      std::vector<float> back(static_cast<size_t>(M));
      state::LoadRow(StateDtype::kInt8, q.data(), 0, M, s, back.data());
      for (int i = 0; i < M; ++i) {
        const double exact = x[i] / static_cast<double>(s);
        EXPECT_LE(std::fabs(q[i] - exact), 0.5 + 1e-5) << i;
        EXPECT_LE(std::abs(q[i]), 127);
        at_max |= std::abs(q[i]) == 127;
        EXPECT_EQ(back[i], static_cast<float>(q[i]) * s);
        EXPECT_LE(std::fabs(back[i] - x[i]), 0.5 * s * (1 + 1e-5));
      }
      EXPECT_TRUE(at_max);
    }
  }
  // Ties round to even: x·(1/s) = k + ½ exactly.
  const float row[2] = {127.0f, 2.5f};  // s = 1, 1/s = 1
  int8_t q[2];
  float s = 0;
  state::StoreRow(StateDtype::kInt8, row, 2, q, 0, &s);
  EXPECT_EQ(s, 1.0f);
  EXPECT_EQ(q[1], 2);
}

// RoundStateRows: fp32 untouched; otherwise equal to the 16-bit conversions / the int8 row rule,
// and idempotent (a stored state stores unchanged), which lets the GPU test compare codes.
TEST(StateDtype, RoundStateRowsIsTheStoreAndIdempotent) {
  std::mt19937_64 g(4);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  const int64_t rows = 64, M = 16;
  std::vector<float> x(static_cast<size_t>(rows * M));
  for (float& v : x) v = nd(g);
  for (StateDtype d : {StateDtype::kF32, StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8}) {
    std::vector<float> r = x;
    RoundStateRows(d, r.data(), rows, M);
    for (size_t i = 0; i < x.size(); ++i) {
      if (d == StateDtype::kF32) ASSERT_EQ(ToBits(r[i]), ToBits(x[i]));
      if (d == StateDtype::kF16) ASSERT_EQ(r[i], static_cast<float>(HalfValue(NearestHalf(x[i]))));
      if (d == StateDtype::kBF16) ASSERT_EQ(r[i], Bf16BitsToFloat(NearestBf16(x[i])));
    }
    std::vector<float> r2 = r;
    RoundStateRows(d, r2.data(), rows, M);
    if (d == StateDtype::kInt8) {
      // Codes are idempotent; the re-derived scale may move by an ulp, so values by ≤ 1 ulp·127.
      for (int64_t row = 0; row < rows; ++row) {
        std::vector<int8_t> q1(M), q2(M);
        float s1, s2;
        state::StoreRow(d, r.data() + row * M, static_cast<int>(M), q1.data(), 0, &s1);
        state::StoreRow(d, r2.data() + row * M, static_cast<int>(M), q2.data(), 0, &s2);
        std::vector<int8_t> q0(M);
        float s0;
        state::StoreRow(d, x.data() + row * M, static_cast<int>(M), q0.data(), 0, &s0);
        EXPECT_EQ(q1, q0);
        EXPECT_EQ(q2, q0);
        EXPECT_NEAR(s1, s0, 2 * std::nextafter(s0, 1e30f) - 2 * s0);
      }
    } else {
      EXPECT_EQ(r2, r);
    }
  }
}

// The decode step kernel's vector form of a 16-value row (PackWords16 / UnpackWords16) is the
// row store and load, byte for byte (the kernel's CPU twin).
TEST(StateDtype, PackedWordsAreTheStoredRow) {
  std::mt19937_64 g(7);
  std::normal_distribution<float> nd(0.0f, 1.5f);
  for (StateDtype d : {StateDtype::kF32, StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8}) {
    for (int trial = 0; trial < 500; ++trial) {
      float x[16];
      for (float& v : x) v = nd(g) * std::ldexp(1.0f, trial % 20 - 10);
      if (trial == 0) std::fill(x, x + 16, 0.0f);
      std::vector<uint8_t> row(64, 0xab);
      float scale = 0.0f;
      state::StoreRow(d, x, 16, row.data(), 0, &scale);
      const float s = state::RowScale(d, x, 16);
      if (d == StateDtype::kInt8) ASSERT_EQ(s, scale);
      uint32_t w[16];
      state::PackWords16(d, x, 1.0f / s, w);
      const size_t bytes = static_cast<size_t>(16 * state::DtypeBytes(d));
      ASSERT_EQ(std::memcmp(w, row.data(), bytes), 0) << StateDtypeName(d) << " trial " << trial;
      float a[16], b[16];
      state::UnpackWords16(d, w, s, a);
      state::LoadRow(d, row.data(), 0, 16, s, b);
      for (int i = 0; i < 16; ++i) ASSERT_EQ(ToBits(a[i]), ToBits(b[i])) << StateDtypeName(d);
    }
  }
}

class StateDtypeModel : public ::testing::Test {
 protected:
  void SetUp() override {
    auto w = LoadMambaWeights(testing::Fixture("tiny").model_dir);
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    weights_ = std::make_shared<const MambaWeights>(std::move(*w));
    std::mt19937_64 g(5);
    ids_.resize(48);
    for (int32_t& t : ids_) t = static_cast<int32_t>(g() % static_cast<uint64_t>(weights_->V()));
  }
  // Prefill of the first `prefill` ids, then one decode step per remaining id; the logits of
  // every decode step, concatenated, and the final state.
  std::vector<float> Run(StateDtype d, int64_t prefill, cpu::MambaState* out_state = nullptr) {
    cpu::MambaState st = cpu::MambaState::Zeros(weights_->config, 1, d);
    std::vector<float> logits, all;
    cpu::ForwardOptions fo;
    fo.last_logits_only = true;
    EXPECT_TRUE(cpu::MambaForward(*weights_, ids_.data(), 1, prefill, &st, &logits, fo).ok());
    for (size_t i = static_cast<size_t>(prefill); i < ids_.size(); ++i) {
      EXPECT_TRUE(cpu::MambaForward(*weights_, &ids_[i], 1, 1, &st, &logits, fo).ok());
      all.insert(all.end(), logits.begin(), logits.end());
    }
    if (out_state != nullptr) *out_state = st;
    return all;
  }
  std::shared_ptr<const MambaWeights> weights_;
  std::vector<int32_t> ids_;
};

// A forward with a narrower state = the fp32 forward from the same (rounded) state, then the store.
TEST_F(StateDtypeModel, ForwardRoundsTheStateItStores) {
  const MambaConfig& c = weights_->config;
  for (StateDtype d : {StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8}) {
    cpu::MambaState narrow;
    Run(d, 8, &narrow);  // a state already in dtype d
    cpu::MambaState wide = narrow;
    wide.dtype = StateDtype::kF32;
    std::vector<float> ln, lw;
    for (int64_t L : {1, 5}) {
      ASSERT_TRUE(cpu::MambaForward(*weights_, ids_.data() + 10, 1, L, &narrow, &ln).ok());
      ASSERT_TRUE(cpu::MambaForward(*weights_, ids_.data() + 10, 1, L, &wide, &lw).ok());
      EXPECT_EQ(ln, lw);  // the logits come before the store
      RoundStateRows(d, wide.conv.data(), c.num_hidden_layers * c.intermediate_size, c.conv_kernel - 1);
      RoundStateRows(d, wide.ssm.data(), c.num_hidden_layers * c.intermediate_size, c.state_size);
      EXPECT_EQ(narrow.conv, wide.conv) << StateDtypeName(d);
      EXPECT_EQ(narrow.ssm, wide.ssm) << StateDtypeName(d);
    }
  }
}

// fp32 stores nothing narrower: the state keeps values no 16-bit format holds.
TEST_F(StateDtypeModel, Fp32StateIsNotRounded) {
  cpu::MambaState st;
  Run(StateDtype::kF32, 8, &st);
  int64_t not_half = 0;
  for (float v : st.ssm) not_half += HalfBitsToFloat(FloatToHalfBits(v)) != v;
  EXPECT_GT(not_half, static_cast<int64_t>(st.ssm.size()) / 2);
}

// Decode-step logits of each dtype against fp32 after a prefill of 8 and 40 decode steps. Bounds
// on max |Δlogit| over all steps and the vocabulary (measured on mamba-tiny: fp16 2.2e-3, bf16
// 2.4e-2, int8 3.5e-2; bounds ~2.5× that): fp16 6e-3, bf16 6e-2, int8 1e-1; and the greedy token
// agrees on ≥ 90 % of steps (measured 40, 40, 39 of 40).
TEST_F(StateDtypeModel, DecodeLogitsStayNearFp32) {
  const std::vector<float> ref = Run(StateDtype::kF32, 8);
  const int64_t V = weights_->V();
  const struct {
    StateDtype d;
    double bound;
  } cases[] = {{StateDtype::kF16, 6e-3}, {StateDtype::kBF16, 6e-2}, {StateDtype::kInt8, 1e-1}};
  for (const auto& cs : cases) {
    const std::vector<float> got = Run(cs.d, 8);
    ASSERT_EQ(got.size(), ref.size());
    double maxdiff = 0;
    int64_t agree = 0, steps = static_cast<int64_t>(ref.size()) / V;
    for (size_t i = 0; i < ref.size(); ++i) maxdiff = std::max(maxdiff, std::fabs(static_cast<double>(got[i]) - ref[i]));
    for (int64_t s = 0; s < steps; ++s) {
      const auto a = std::max_element(ref.begin() + s * V, ref.begin() + (s + 1) * V) - (ref.begin() + s * V);
      const auto b = std::max_element(got.begin() + s * V, got.begin() + (s + 1) * V) - (got.begin() + s * V);
      agree += a == b;
    }
    std::printf("[state] %s: max |dlogit| %.3g over %lld steps, greedy agreement %lld/%lld\n", StateDtypeName(cs.d),
                maxdiff, static_cast<long long>(steps), static_cast<long long>(agree), static_cast<long long>(steps));
    EXPECT_LE(maxdiff, cs.bound) << StateDtypeName(cs.d);
    EXPECT_GT(maxdiff, 0.0) << StateDtypeName(cs.d);  // the store really rounds
    EXPECT_GE(agree * 10, steps * 9) << StateDtypeName(cs.d);
  }
}

// The decode-step perplexity through the CPU backend: with fp32 it is the prefill perplexity (same
// arithmetic, batch-of-one forwards); narrower states move it a little.
TEST_F(StateDtypeModel, DecodePerplexityMatchesPrefillForFp32) {
  std::mt19937_64 g(6);
  std::vector<int32_t> tokens(200);
  // A repetitive text, so that the state carries information and the perplexity is low.
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>((i % 13) * 7 + (g() % 2));
  const int64_t window = 32;
  auto prefill = EvaluatePerplexity(*weights_, tokens, window);
  ASSERT_TRUE(prefill.ok());
  for (StateDtype d : {StateDtype::kF32, StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8}) {
    serve::SequenceBackendOptions o;
    o.num_slots = 4, o.max_batch = 4, o.max_prefill_tokens = 16, o.max_logit_rows = 1, o.state_dtype = d;
    auto backend = serve::CpuSequenceBackend::Create(weights_, o);
    ASSERT_TRUE(backend.ok());
    auto dec = EvaluateDecodePerplexity(**backend, tokens, window);
    ASSERT_TRUE(dec.ok()) << dec.status().ToString();
    EXPECT_EQ(dec->windows, prefill->windows);
    EXPECT_EQ(dec->tokens_scored, prefill->tokens_scored);
    std::printf("[state] %s decode-step perplexity %.6f (prefill %.6f)\n", StateDtypeName(d), dec->perplexity,
                prefill->perplexity);
    const double rel = std::fabs(dec->perplexity / prefill->perplexity - 1);
    EXPECT_LE(rel, d == StateDtype::kF32 ? 1e-5 : 1e-2) << StateDtypeName(d);
  }
  auto bad = EvaluateDecodePerplexity(**serve::CpuSequenceBackend::Create(weights_, {}), tokens, 1);
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
}

// mq-engine eval --decode-steps: fp32 equals the prefill perplexity (printed to 4 decimals); the
// state dtype is validated and only goes with --decode-steps.
TEST(StateDtypeCli, EvalDecodeSteps) {
  const std::string base = std::string(MQ_ENGINE_BIN) + " eval --model " + testing::Fixture("tiny").model_dir +
                           " --text " + testing::RepoPath("models/text/eval.txt") + " --max-windows 3 --json";
  auto prefill = testing::RunCommand(base);
  ASSERT_EQ(prefill.exit_code, 0) << prefill.output;
  const auto jp = nlohmann::json::parse(prefill.output);
  EXPECT_EQ(jp["windows"], 3);
  EXPECT_EQ(jp["mode"], "prefill");
  auto dec = testing::RunCommand(base + " --decode-steps --state-dtype fp32 --batch 2");
  ASSERT_EQ(dec.exit_code, 0) << dec.output;
  const auto jd = nlohmann::json::parse(dec.output);
  EXPECT_EQ(jd["mode"], "decode-steps");
  EXPECT_EQ(jd["state_dtype"], "fp32");
  EXPECT_EQ(jd["tokens_scored"], jp["tokens_scored"]);
  EXPECT_NEAR(jd["perplexity"].get<double>(), jp["perplexity"].get<double>(), 1e-5 * jp["perplexity"].get<double>());
  auto i8 = testing::RunCommand(base + " --decode-steps --state-dtype int8");
  ASSERT_EQ(i8.exit_code, 0) << i8.output;
  EXPECT_NE(nlohmann::json::parse(i8.output)["perplexity"].get<double>(), jp["perplexity"].get<double>());
  EXPECT_EQ(testing::RunCommand(base + " --decode-steps --state-dtype fp8 2>&1").exit_code, 2);
  EXPECT_EQ(testing::RunCommand(base + " --state-dtype int8 2>&1").exit_code, 2);
}

}  // namespace
}  // namespace mq
