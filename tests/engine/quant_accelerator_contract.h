// What every QuantAccelerator must do, as checks shared by the CPU test (quant_accelerator_test,
// in CI) and the GPU test (cuda_quant_gpu_test): each device runs the same assertions against
// independent references (naive float64 products, Eigen, a naive observer over the CPU forward,
// the CPU CompareModels), with a tolerance that says how far that device may be from them.
#pragma once

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <vector>

#include "eval/perplexity.h"
#include "model/model_loader.h"
#include "quant/calibration.h"
#include "quant/klt.h"
#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "quant/rotation_fusion.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq::testing {

inline std::vector<double> RandomDouble(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> d;
  std::vector<double> v(n);
  for (double& x : v) x = d(g);
  return v;
}

inline double RelDiff(const std::vector<double>& a, const std::vector<double>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < ref.size(); ++i) num += (a[i] - ref[i]) * (a[i] - ref[i]), den += ref[i] * ref[i];
  return std::sqrt(num / std::max(den, 1e-300));
}

// MultiplyRight / MultiplyLeftTransposed against naive float64 products, with row ranges, a
// rotation that changes between calls (devices may cache it) and bad shapes.
inline void CheckRotationProducts(quant::QuantAccelerator& accel) {
  const int64_t rows = 37, n = 24;
  const std::vector<float> w0 = RandomFloat(static_cast<size_t>(rows * n), 11);
  for (uint64_t seed : {1u, 2u, 1u}) {
    const std::vector<double> r = RandomDouble(static_cast<size_t>(n * n), seed);
    std::vector<float> w = w0;
    ASSERT_TRUE(accel.MultiplyRight(w, n, r, 5, 30).ok());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double ref = w0[i * n + j];
        if (i >= 5 && i < 30) {
          ref = 0;
          for (int64_t k = 0; k < n; ++k) ref += static_cast<double>(w0[i * n + k]) * r[k * n + j];
        }
        ASSERT_NEAR(w[i * n + j], ref, 2e-6 * (1 + std::fabs(ref))) << "MultiplyRight row " << i << " col " << j;
      }
    // Rows 3..10 of width n ← Rᵀ(8×8)·rows.
    const int64_t m = 8;
    const std::vector<double> r8 = RandomDouble(static_cast<size_t>(m * m), seed + 100);
    w = w0;
    ASSERT_TRUE(accel.MultiplyLeftTransposed(w, n, r8, 3, m).ok());
    for (int64_t i = 0; i < rows; ++i)
      for (int64_t j = 0; j < n; ++j) {
        double ref = w0[i * n + j];
        if (i >= 3 && i < 3 + m) {
          ref = 0;
          for (int64_t k = 0; k < m; ++k) ref += r8[k * m + (i - 3)] * static_cast<double>(w0[(3 + k) * n + j]);
        }
        ASSERT_NEAR(w[i * n + j], ref, 2e-6 * (1 + std::fabs(ref))) << "MultiplyLeftTransposed row " << i;
      }
  }
  std::vector<float> w = w0;
  EXPECT_EQ(accel.MultiplyRight(w, n, RandomDouble(10, 3)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(accel.MultiplyRight(w, n, RandomDouble(n * n, 3), 30, 5).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(accel.MultiplyLeftTransposed(w, n, RandomDouble(64, 3), 35, 8).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(w, w0) << "a refused product changed the weights";
}

// Eigenvectors of random second-moment matrices against Eigen: same eigenvalues, orthonormal
// K, and K·Λ·Kᵀ = Σ.
inline void CheckEigenvectors(quant::QuantAccelerator& accel) {
  for (int64_t n : {5, 48, 160}) {
    const int64_t m = 3 * n;
    const std::vector<double> x = RandomDouble(static_cast<size_t>(m * n), 7 + n);
    std::vector<double> sigma(static_cast<size_t>(n * n), 0.0);
    for (int64_t t = 0; t < m; ++t)
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) sigma[i * n + j] += x[t * n + i] * x[t * n + j] * (1.0 + i) / m;
    for (int64_t i = 0; i < n; ++i)  // make it exactly symmetric
      for (int64_t j = 0; j < i; ++j) sigma[i * n + j] = sigma[j * n + i];
    std::vector<double> lambda, lambda_ref;
    auto k = accel.SymmetricEigenvectors(sigma, n, &lambda);
    ASSERT_TRUE(k.ok()) << k.status().ToString();
    ASSERT_TRUE(quant::KltBasis(sigma, n, &lambda_ref).ok());
    ASSERT_EQ(lambda.size(), static_cast<size_t>(n));
    EXPECT_LE(RelDiff(lambda, lambda_ref), 1e-10) << "n=" << n;
    for (int64_t i = 1; i < n; ++i) EXPECT_GE(lambda[i - 1], lambda[i]) << "eigenvalues not descending";
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> K(k->data(), n, n);
    const Eigen::MatrixXd I = K.transpose() * K;
    EXPECT_LE((I - Eigen::MatrixXd::Identity(n, n)).norm(), 1e-10 * n) << "K not orthonormal, n=" << n;
    Eigen::VectorXd l = Eigen::Map<const Eigen::VectorXd>(lambda.data(), n);
    const Eigen::MatrixXd back = K * l.asDiagonal() * K.transpose();
    Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> S(sigma.data(), n, n);
    EXPECT_LE((back - S).norm() / S.norm(), 1e-11) << "K·Λ·Kᵀ ≠ Σ, n=" << n;
  }
  std::vector<double> bad = {1, NAN, NAN, 1};
  EXPECT_EQ(accel.SymmetricEigenvectors(bad, 2, nullptr).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(accel.SymmetricEigenvectors({1, 2, 3}, 2, nullptr).status().code(), StatusCode::kInvalidArgument);
}

// A naive observer over the CPU forward: every activation kept, statistics in float64.
class NaiveStats : public ForwardObserver {
 public:
  explicit NaiveStats(std::set<ActivationSite> sites) : sites_(std::move(sites)) {}
  bool Wants(ActivationSite s) const override { return sites_.count(s) > 0; }
  void Observe(int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) override {
    quant::SiteStats& s = stats[{layer, site}];
    if (s.channels == 0) {
      s.channels = cols;
      s.absmax.assign(cols, 0.0f);
      s.sum.assign(cols, 0.0);
      s.moment.assign(cols * cols, 0.0);
    }
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = 0; i < cols; ++i) {
        const double v = x[r * cols + i];
        s.absmax[i] = std::max(s.absmax[i], static_cast<float>(std::fabs(v)));
        s.sum[i] += v;
        for (int64_t j = 0; j < cols; ++j) s.moment[i * cols + j] += v * x[r * cols + j];
      }
    s.rows += rows;
  }
  std::map<quant::SiteKey, quant::SiteStats> stats;

 private:
  std::set<ActivationSite> sites_;
};

inline double RelDiffF(const std::vector<float>& a, const std::vector<float>& ref) {
  return RelDiff(std::vector<double>(a.begin(), a.end()), std::vector<double>(ref.begin(), ref.end()));
}

// Calibration of mamba-tiny (γ folded, as the pipeline calibrates) against the naive observer:
// the linears' inputs, the SSM state h_t (per state index, over steps and channels) and C.
// `tol` bounds the relative error of each statistic (FP16 activations on a GPU are ~1e-3 off).
inline void CheckCalibration(quant::QuantAccelerator& accel, double tol) {
  auto loaded = LoadMambaWeights(RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  MambaWeights w = std::move(*loaded);
  quant::FoldNormWeights(w);
  const int64_t seq_len = 48, V = w.V();
  std::mt19937_64 g(5);
  std::vector<int32_t> tokens(2000);
  for (int32_t& t : tokens) t = static_cast<int32_t>(g() % static_cast<uint64_t>(V));
  auto starts = quant::SampleWindowStarts(static_cast<int64_t>(tokens.size()), seq_len, 11, 3);
  ASSERT_TRUE(starts.ok());
  quant::CalibrationRequest req;
  req.covariance_sites = {ActivationSite::kInProjInput, ActivationSite::kDtProjInput};
  req.sites = {ActivationSite::kInProjInput, ActivationSite::kDtProjInput, ActivationSite::kOutProjInput,
               ActivationSite::kXProjInput, ActivationSite::kSsmState, ActivationSite::kSsmC};
  int64_t calls = 0;
  auto stats = accel.Calibrate(w, tokens, *starts, seq_len, req, [&](int64_t done, int64_t total) {
    EXPECT_LE(done, total);
    ++calls;
    return true;
  });
  ASSERT_TRUE(stats.ok()) << stats.status().ToString();
  EXPECT_GE(calls, 1);
  NaiveStats naive(req.sites);
  ASSERT_TRUE(quant::ObserveWindows(w, tokens, *starts, seq_len, &naive).ok());
  ASSERT_EQ(stats->sites().size(), naive.stats.size());
  for (const auto& [key, ref] : naive.stats) {
    const quant::SiteStats* s = stats->Find(key.first, key.second);
    ASSERT_NE(s, nullptr) << "missing layer " << key.first << " " << ActivationSiteName(key.second);
    const std::string where = std::string("layer ") + std::to_string(key.first) + " " + ActivationSiteName(key.second);
    EXPECT_EQ(s->rows, ref.rows) << where;
    EXPECT_EQ(s->channels, ref.channels) << where;
    EXPECT_LE(RelDiffF(s->absmax, ref.absmax), tol) << where << " absmax";
    // The state's statistics are its per-index maxima (S4's smoothing); its Σx is not part of the
    // contract (the GPU does not take it).
    if (key.second == ActivationSite::kSsmState) continue;
    // Σx has cancellations: measured against the scale of Σ|x| (rows · absmax).
    double err = 0, scale = 0;
    for (int64_t c = 0; c < ref.channels; ++c) {
      err = std::max(err, std::fabs(s->sum[c] - ref.sum[c]));
      scale = std::max(scale, static_cast<double>(ref.absmax[c]) * static_cast<double>(ref.rows));
    }
    EXPECT_LE(err / scale, tol) << where << " sum";
    if (req.covariance_sites.count(key.second)) {
      quant::SiteStats full = ref;
      std::vector<double> m_ref = ref.moment;
      for (double& v : m_ref) v /= static_cast<double>(ref.rows);
      EXPECT_LE(RelDiff(s->SecondMoment(), m_ref), tol) << where << " second moment";
    } else {
      EXPECT_TRUE(s->moment.empty()) << where << ": no covariance was asked for";
    }
  }
  // Windows outside the text are refused.
  std::vector<int64_t> outside = {static_cast<int64_t>(tokens.size()) - 10};
  EXPECT_EQ(accel.Calibrate(w, tokens, outside, seq_len, req, nullptr).status().code(), StatusCode::kInvalidArgument);
}

// Evaluation of a quantized mamba-tiny against its float model, compared with the CPU
// CompareModels: perplexities within `ppl_tol` (relative), top-1 agreement within
// `top1_tol` (absolute), KL within `kl_tol` (relative).
inline void CheckCompare(quant::QuantAccelerator& accel, double ppl_tol, double top1_tol, double kl_tol) {
  quant::QuantizeOptions o;
  o.model_dir = RepoPath("models/mamba-tiny");
  o.calib_text_path = RepoPath("models/text/calib.txt");
  o.num_samples = 8;
  o.seq_len = 64;
  auto build = quant::BuildQuantizedModel(o, nullptr);
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  std::mt19937_64 g(9);
  std::vector<int32_t> tokens(3000);
  for (int32_t& t : tokens) t = static_cast<int32_t>(g() % 512);  // frequent ids: a text-like spread
  auto got = accel.Compare(build->original, build->model, tokens, 128, nullptr);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  auto ref = CompareModels(build->original, build->model, tokens, 128);
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(got->reference.tokens_scored, ref->reference.tokens_scored);
  EXPECT_EQ(got->candidate.windows, ref->candidate.windows);
  EXPECT_NEAR(got->reference.perplexity, ref->reference.perplexity, ppl_tol * ref->reference.perplexity);
  EXPECT_NEAR(got->candidate.perplexity, ref->candidate.perplexity, ppl_tol * ref->candidate.perplexity);
  EXPECT_NEAR(got->top1_agreement, ref->top1_agreement, top1_tol);
  EXPECT_NEAR(got->mean_kl, ref->mean_kl, kl_tol * ref->mean_kl);
  EXPECT_GT(ref->mean_kl, 0.0);
  std::printf("[%s] compare: ppl float %.4f/%.4f quant %.4f/%.4f top1 %.4f/%.4f KL %.5f/%.5f (device/CPU)\n",
              accel.name().c_str(), got->reference.perplexity, ref->reference.perplexity, got->candidate.perplexity,
              ref->candidate.perplexity, got->top1_agreement, ref->top1_agreement, got->mean_kl, ref->mean_kl);
  EXPECT_EQ(accel.Compare(build->original, build->model, tokens, 1, nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace mq::testing
