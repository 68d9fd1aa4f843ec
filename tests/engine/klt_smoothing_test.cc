// KLT-enhanced rotation, smoothing factors and calibration window sampling.
#include <cmath>
#include <random>

#include <gtest/gtest.h>

#include "quant/calibration.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/hadamard.h"
#include "quant/klt.h"
#include "quant/smoothing.h"

namespace mq::quant {
namespace {

// Σ of correlated data with very unequal channel variances.
std::vector<double> CorrelatedCovariance(int64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::vector<double> a(static_cast<size_t>(n * n));
  for (auto& v : a) v = g(rng);
  for (int64_t j = 0; j < n; ++j) a[j * n + 0] *= 20.0;  // one dominant direction
  std::vector<double> s(static_cast<size_t>(n * n), 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t k = 0; k < n; ++k) s[i * n + j] += a[i * n + k] * a[j * n + k];
  return s;
}

TEST(KltTest, RotationIsOrthogonalAndEqualizesChannelVariances) {
  for (int64_t n : {16, 24, 64}) {
    const std::vector<double> sigma = CorrelatedCovariance(n, 11);
    auto h = RandomHadamard::Create(n, 5);
    ASSERT_TRUE(h.ok());
    auto r = KltHadamardRotation(sigma, n, *h, CpuAccelerator());
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    double trace = 0;
    for (int64_t i = 0; i < n; ++i) trace += sigma[i * n + i];
    double max_diag_before = 0, min_diag_before = 1e300;
    for (int64_t i = 0; i < n; ++i) {
      max_diag_before = std::max(max_diag_before, sigma[i * n + i]);
      min_diag_before = std::min(min_diag_before, sigma[i * n + i]);
    }
    EXPECT_GT(max_diag_before / min_diag_before, 2.0);
    // cov(X R) = Rᵀ Σ R: every diagonal entry equals tr(Σ)/n; R is orthogonal.
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) d += (*r)[a * n + j] * sigma[a * n + b] * (*r)[b * n + j];
      EXPECT_NEAR(d, trace / n, 1e-8 * trace) << "n=" << n << " channel " << j;
      for (int64_t k = 0; k < n; ++k) {
        double dot = 0;
        for (int64_t a = 0; a < n; ++a) dot += (*r)[a * n + j] * (*r)[a * n + k];
        EXPECT_NEAR(dot, j == k ? 1.0 : 0.0, 1e-10);
      }
    }
    // Plain Hadamard alone does not equalize correlated channels this well.
    std::vector<double> hd = h->Dense();
    double spread = 0;
    for (int64_t j = 0; j < n; ++j) {
      double d = 0;
      for (int64_t a = 0; a < n; ++a)
        for (int64_t b = 0; b < n; ++b) d += hd[a * n + j] * sigma[a * n + b] * hd[b * n + j];
      spread = std::max(spread, std::fabs(d - trace / n) / (trace / n));
    }
    EXPECT_GT(spread, 1e-3);
  }
}

TEST(KltTest, EigenvaluesDescendAndBadInputIsRefused) {
  std::vector<double> sigma = {4, 0, 0, 0, 9, 0, 0, 0, 1};
  std::vector<double> ev;
  auto k = KltBasis(sigma, 3, &ev);
  ASSERT_TRUE(k.ok());
  EXPECT_NEAR(ev[0], 9, 1e-12);
  EXPECT_NEAR(ev[1], 4, 1e-12);
  EXPECT_NEAR(ev[2], 1, 1e-12);
  EXPECT_NEAR(std::fabs((*k)[1 * 3 + 0]), 1.0, 1e-12);  // first column is e₂
  EXPECT_FALSE(KltBasis({1, 2, 3}, 2).ok());
  EXPECT_FALSE(KltBasis({1, NAN, NAN, 1}, 2).ok());
}

TEST(SmoothingTest, FollowsTheFormulaAndClamps) {
  auto s = SmoothingFactors({4.0f, 1e-6f, 0.0f, 9.0f}, {1.0f, 100.0f, 1.0f, 0.0f}, 0.5, 1e-2);
  EXPECT_FLOAT_EQ(s[0], 2.0f);    // √4 / √1
  EXPECT_FLOAT_EQ(s[1], 1e-2f);   // √1e-6 / √100 = 1e-4, clamped
  EXPECT_FLOAT_EQ(s[2], 1.0f);    // dead activation channel
  EXPECT_FLOAT_EQ(s[3], 1.0f);    // dead weight column
  auto m = ColumnAbsMax({1, -5, 3, -2}, 2, 2);
  EXPECT_EQ(m, (std::vector<float>{3, 5}));
}

TEST(CalibrationTest, WindowStartsAreSeededAndInRange) {
  auto a = SampleWindowStarts(1000, 256, 64, 42);
  auto b = SampleWindowStarts(1000, 256, 64, 42);
  auto c = SampleWindowStarts(1000, 256, 64, 43);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(*a, *b);
  EXPECT_NE(*a, *c);
  for (int64_t s : *a) {
    EXPECT_GE(s, 0);
    EXPECT_LE(s + 256, 1000);
  }
  EXPECT_FALSE(SampleWindowStarts(100, 256, 1, 0).ok());
  EXPECT_FALSE(SampleWindowStarts(1000, 256, 0, 0).ok());
}

TEST(CalibrationTest, SecondMomentAndPercentile) {
  SiteStats s;
  s.channels = 2;
  s.rows = 2;
  s.moment = {1 + 9, 2 + 12, 0, 4 + 16};  // rows (1,2) and (3,4); upper triangle
  EXPECT_EQ(s.SecondMoment(), (std::vector<double>{5, 7, 7, 10}));
  for (int i = 1; i <= 100; ++i) s.row_absmax.push_back(static_cast<float>(i));
  EXPECT_FLOAT_EQ(s.RowAbsmaxPercentile(100), 100.0f);
  EXPECT_FLOAT_EQ(s.RowAbsmaxPercentile(0), 1.0f);
  EXPECT_NEAR(s.RowAbsmaxPercentile(50), 50.5f, 0.6f);
}

}  // namespace
}  // namespace mq::quant
