// Output-aware W4 clipping (quant/model_quantizer.h): each row's range minimizes its output error
// eᵀΣe over the same grid as the plain MSE search, so (checked here with an independent float64
// evaluation) no row's output error is worse than the MSE-clipped row's, the total is clearly
// better when the input is anisotropic (as after a KLT), and with Σ = I it picks the MSE ranges.
#include <cmath>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "model/linear.h"
#include "quant/model_quantizer.h"

namespace mq::quant {
namespace {

// Rows of mixed Gaussian weights with a few large entries (what 4-bit clipping trades off).
std::vector<float> Weights(int64_t rows, int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> w(static_cast<size_t>(rows * cols));
  for (float& v : w) v = n(rng);
  for (int64_t r = 0; r < rows; ++r) w[r * cols + static_cast<int64_t>(rng() % cols)] *= 6.0f;
  return w;
}

// Σ = XᵀX / T of correlated inputs with a spread of channel scales (energy in few directions).
std::vector<double> AnisotropicMoment(int64_t cols, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> n(0.0, 1.0);
  const int64_t T = 4 * cols, k = 4;
  std::vector<double> mix(static_cast<size_t>(k * cols));
  for (double& v : mix) v = n(rng);
  std::vector<double> sigma(static_cast<size_t>(cols * cols), 0.0);
  std::vector<double> x(static_cast<size_t>(cols));
  for (int64_t t = 0; t < T; ++t) {
    for (int64_t c = 0; c < cols; ++c) x[c] = 0.1 * n(rng);
    for (int64_t f = 0; f < k; ++f) {
      const double z = n(rng) * (3.0 + f);
      for (int64_t c = 0; c < cols; ++c) x[c] += z * mix[f * cols + c];
    }
    for (int64_t i = 0; i < cols; ++i)
      for (int64_t j = 0; j < cols; ++j) sigma[i * cols + j] += x[i] * x[j] / static_cast<double>(T);
  }
  return sigma;
}

// eᵀΣe of row r of Q in float64, e = w − q·s.
double RowOutputError(const std::vector<float>& w, const LinearQuant& q, int64_t r, int64_t cols,
                      const std::vector<double>& sigma) {
  std::vector<double> e(static_cast<size_t>(cols));
  for (int64_t c = 0; c < cols; ++c)
    e[c] = static_cast<double>(w[r * cols + c]) - static_cast<double>(q.qweight[r * cols + c]) * q.weight_scale[r];
  double acc = 0.0;
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) acc += e[i] * sigma[i * cols + j] * e[j];
  return acc;
}

TEST(OutputAwareClipTest, NoRowWorseThanMseClippingAndClearlyBetterOverall) {
  const int64_t rows = 48, cols = 64;
  const std::vector<float> w = Weights(rows, cols, 1);
  const std::vector<double> sigma = AnisotropicMoment(cols, 2);
  // The damping the quantizer adds (1 % of the mean diagonal) is part of what it minimizes.
  std::vector<double> damped = sigma;
  double mean_diag = 0.0;
  for (int64_t i = 0; i < cols; ++i) mean_diag += sigma[i * cols + i] / static_cast<double>(cols);
  for (int64_t i = 0; i < cols; ++i) damped[i * cols + i] += 0.01 * mean_diag;

  const LinearQuant aware = OutputAwareRowQuant(w, rows, cols, 4, sigma);
  const LinearQuant mse = QuantizeWeightRows(w, rows, cols, 4, WeightClip::kMse);
  ASSERT_EQ(aware.qweight.size(), w.size());
  ASSERT_EQ(aware.weight_scale.size(), static_cast<size_t>(rows));
  double total_aware = 0.0, total_mse = 0.0, total_undamped_aware = 0.0, total_undamped_mse = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      EXPECT_LE(std::abs(aware.qweight[r * cols + c]), 7) << r;
    }
    const double a = RowOutputError(w, aware, r, cols, damped), m = RowOutputError(w, mse, r, cols, damped);
    EXPECT_LE(a, m * (1.0 + 1e-5)) << "row " << r;
    total_aware += a;
    total_mse += m;
    total_undamped_aware += RowOutputError(w, aware, r, cols, sigma);
    total_undamped_mse += RowOutputError(w, mse, r, cols, sigma);
  }
  EXPECT_LT(total_aware, 0.95 * total_mse) << total_aware << " vs " << total_mse;
  EXPECT_LT(total_undamped_aware, total_undamped_mse);
}

TEST(OutputAwareClipTest, IdentityMomentGivesTheMseRanges) {
  const int64_t rows = 32, cols = 40;
  const std::vector<float> w = Weights(rows, cols, 3);
  std::vector<double> eye(static_cast<size_t>(cols * cols), 0.0);
  for (int64_t i = 0; i < cols; ++i) eye[i * cols + i] = 2.5;
  const LinearQuant aware = OutputAwareRowQuant(w, rows, cols, 4, eye);
  const LinearQuant mse = QuantizeWeightRows(w, rows, cols, 4, WeightClip::kMse);
  for (int64_t r = 0; r < rows; ++r) EXPECT_FLOAT_EQ(aware.weight_scale[r], mse.weight_scale[r]) << r;
  EXPECT_EQ(aware.qweight, mse.qweight);
}

}  // namespace
}  // namespace mq::quant
