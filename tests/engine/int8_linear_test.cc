// The CPU INT8 reference: exact int32 products, quantizer rounding and ranges, and a quantized
// linear's error against float.
#include "model/linear.h"

#include <cmath>
#include <random>

#include <gtest/gtest.h>

namespace mq {
namespace {

std::vector<int8_t> RandomInt8(size_t n, std::mt19937& rng) {
  std::uniform_int_distribution<int> d(-127, 127);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(d(rng));
  return v;
}

TEST(Int8MatMulTest, EqualsNaiveInt64Accumulation) {
  std::mt19937 rng(7);
  for (auto [rows, in, out] : {std::tuple{1, 1, 1}, {3, 17, 5}, {7, 384, 130}, {64, 768, 65}, {2, 5120, 3}}) {
    auto x = RandomInt8(static_cast<size_t>(rows * in), rng);
    auto w = RandomInt8(static_cast<size_t>(out * in), rng);
    std::vector<int32_t> acc(static_cast<size_t>(rows * out));
    Int8MatMulTransposedB(x.data(), w.data(), acc.data(), rows, in, out);
    for (int r = 0; r < rows; ++r)
      for (int o = 0; o < out; ++o) {
        int64_t ref = 0;
        for (int k = 0; k < in; ++k) ref += int64_t{x[r * in + k]} * w[o * in + k];
        ASSERT_EQ(acc[r * out + o], ref) << rows << "x" << in << "x" << out << " at " << r << "," << o;
      }
  }
}

TEST(Int8MatMulTest, ExtremeValuesDoNotOverflow) {
  // 127·127·5120 = 82,580,480 fits int32 comfortably; check the sign handling at the extremes.
  const int in = 5120;
  std::vector<int8_t> x(in, -127), w(2 * in, 127);
  for (int k = 0; k < in; ++k) w[in + k] = -127;
  std::vector<int32_t> acc(2);
  Int8MatMulTransposedB(x.data(), w.data(), acc.data(), 1, in, 2);
  EXPECT_EQ(acc[0], -127 * 127 * in);
  EXPECT_EQ(acc[1], 127 * 127 * in);
}

TEST(QuantizerTest, PerTokenScalesAndRoundHalfToEven) {
  const float x[6] = {2.54f, -1.27f, 0.0f, 0.5f, -0.5f, 1.5f};
  int8_t q[6];
  float s[2];
  QuantizeRowsPerToken(x, 2, 3, q, s);
  EXPECT_FLOAT_EQ(s[0], 2.54f / 127.0f);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -64);  // −63.5 rounds to even
  EXPECT_EQ(q[2], 0);
  EXPECT_FLOAT_EQ(s[1], 1.5f / 127.0f);
  EXPECT_EQ(q[5], 127);
  const float zeros[4] = {0, 0, 0, 0};
  int8_t qz[4];
  float sz;
  QuantizeRowsPerToken(zeros, 1, 4, qz, &sz);  // an all-zero token must not divide by zero
  EXPECT_EQ(sz, 1.0f);
  EXPECT_EQ(qz[0], 0);
}

TEST(QuantizerTest, StaticScaleSaturates) {
  const float x[3] = {10.0f, -10.0f, 0.05f};
  int8_t q[3];
  QuantizeRowsStatic(x, 1, 3, 0.01f, q);
  EXPECT_EQ(q[0], 127);
  EXPECT_EQ(q[1], -127);
  EXPECT_EQ(q[2], 5);
}

TEST(QuantizerTest, WeightRowsUseTheBitWidthsRange) {
  std::mt19937 rng(1);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> w(8 * 64);
  for (auto& v : w) v = n(rng);
  for (int bits : {8, 4}) {
    LinearQuant q = QuantizeWeightRows(w, 8, 64, bits);
    const int qmax = bits == 4 ? 7 : 127;
    for (int r = 0; r < 8; ++r) {
      float amax = 0;
      for (int c = 0; c < 64; ++c) amax = std::max(amax, std::fabs(w[r * 64 + c]));
      EXPECT_FLOAT_EQ(q.weight_scale[r], amax / qmax);
      int hit = 0;
      for (int c = 0; c < 64; ++c) {
        const int v = q.qweight[r * 64 + c];
        ASSERT_LE(std::abs(v), qmax);
        hit += std::abs(v) == qmax;
        // Each value is the nearest level: error at most half a step.
        EXPECT_LE(std::fabs(v * q.weight_scale[r] - w[r * 64 + c]), 0.5f * q.weight_scale[r] * 1.0001f);
      }
      EXPECT_GE(hit, 1);  // the row maximum lands on the top level
    }
  }
}

TEST(QuantizedLinearTest, MatchesFloatWithinQuantizationError) {
  std::mt19937 rng(3);
  std::normal_distribution<float> n(0.0f, 1.0f);
  Linear f;
  f.in_features = 256;
  f.out_features = 96;
  f.weight.resize(256 * 96);
  for (auto& v : f.weight) v = n(rng);
  std::vector<float> x(16 * 256);
  for (auto& v : x) v = n(rng);
  std::vector<float> yf(16 * 96), yq(16 * 96);
  f.Forward(x.data(), 16, yf.data());
  Linear q = f;
  q.quant = QuantizeWeightRows(f.weight, 96, 256, 8);
  q.Forward(x.data(), 16, yq.data());
  double num = 0, den = 0;
  for (size_t i = 0; i < yf.size(); ++i) {
    num += (yq[i] - yf[i]) * (yq[i] - yf[i]);
    den += yf[i] * yf[i];
  }
  const double rel = std::sqrt(num / den);
  EXPECT_LT(rel, 0.02);   // W8A8 on Gaussian data: about 1%
  EXPECT_GT(rel, 1e-4);   // and it really is quantized
}

}  // namespace
}  // namespace mq

namespace mq {
namespace {

TEST(QuantizerTest, MseClippingNeverIncreasesARowsErrorAndHelpsHeavyTails) {
  std::mt19937 rng(9);
  std::student_t_distribution<float> heavy(3.0f);  // outliers make the max-range grid coarse
  const int rows = 32, cols = 256;
  std::vector<float> w(rows * cols);
  for (auto& v : w) v = heavy(rng);
  auto error = [&](const LinearQuant& q, int r) {
    double e = 0;
    for (int c = 0; c < cols; ++c) {
      const double d = q.qweight[r * cols + c] * q.weight_scale[r] - w[r * cols + c];
      e += d * d;
    }
    return e;
  };
  const LinearQuant mx = QuantizeWeightRows(w, rows, cols, 4, WeightClip::kMax);
  const LinearQuant ms = QuantizeWeightRows(w, rows, cols, 4, WeightClip::kMse);
  double total_max = 0, total_mse = 0;
  for (int r = 0; r < rows; ++r) {
    EXPECT_LE(error(ms, r), error(mx, r) * (1 + 1e-9)) << "row " << r;
    EXPECT_LE(ms.weight_scale[r], mx.weight_scale[r]);
    total_max += error(mx, r);
    total_mse += error(ms, r);
  }
  EXPECT_LT(total_mse, 0.8 * total_max);
}

}  // namespace
}  // namespace mq
