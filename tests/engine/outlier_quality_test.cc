// MambaQuant on an outlier variant of mamba-tiny (model/outlier_transform.h, the default spec):
// at W4A8 it must be no worse than QuaRot (the regression: R5 without S5 lost badly
// there), and at W8A8 close to float, in both scopes. Perplexity on models/text/eval.txt.
#include <cstdio>
#include <filesystem>

#include <gtest/gtest.h>
#include <unistd.h>

#include "eval/perplexity.h"
#include "model/hf_model_writer.h"
#include "model/outlier_transform.h"
#include "quant/quantize_pipeline.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

// Seed noise on this variant (W4A8 linear, seeds 0–2, 32 calibration windows): quarot +3.8,
// +6.5, +3.7 %, mambaquant +3.2, +0.7, +0.6 %: one seed's Δ varies by ~1.5 points (standard
// deviation), the mean of two by ~1. The comparisons below use the mean over seeds 0 and 1 with
// that 1-point tolerance.
constexpr double kSeedTolerancePoints = 1.0;

class OutlierQualityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() / ("mq-outlier-quality-" + std::to_string(::getpid())));
    fs::remove_all(*dir_);
    auto w = LoadMambaWeights(testing::RepoPath("models/mamba-tiny"));
    ASSERT_TRUE(w.ok());
    auto spec = OutlierSpec::Parse("default", 0);
    ASSERT_TRUE(spec.ok());
    ASSERT_TRUE(ApplyOutliers(*w, *spec).ok());
    ASSERT_TRUE(WriteFloatHfModel(*w, testing::RepoPath("models/mamba-tiny"), dir_->string()).ok());
  }
  static void TearDownTestSuite() {
    fs::remove_all(*dir_);
    delete dir_;
  }

  struct Mean {
    double delta = 0.0;  // perplexity change, %
    double kl = 0.0;     // mean KL(float ‖ quantized) per position
  };
  // Mean perplexity change (%) over `seeds` of each configuration, evaluated in one pass.
  static std::vector<double> MeanDeltas(const std::vector<quant::QuantizeOptions>& configs,
                                        const std::vector<uint64_t>& seeds) {
    std::vector<double> d;
    for (const Mean& m : Means(configs, seeds)) d.push_back(m.delta);
    return d;
  }
  // Means over `seeds` of each configuration's perplexity change and KL, evaluated in one pass.
  static std::vector<Mean> Means(const std::vector<quant::QuantizeOptions>& configs, const std::vector<uint64_t>& seeds) {
    std::vector<MambaWeights> models;
    MambaWeights original;
    for (const auto& c : configs)
      for (uint64_t seed : seeds) {
        quant::QuantizeOptions o = c;
        o.model_dir = dir_->string();
        o.calib_text_path = testing::RepoPath("models/text/calib.txt");
        o.num_samples = 32;
        o.seq_len = 256;
        o.seed = seed;
        auto b = quant::BuildQuantizedModel(o, nullptr);
        EXPECT_TRUE(b.ok()) << b.status().ToString();
        if (!b.ok()) return {};
        original = std::move(b->original);
        models.push_back(std::move(b->model));
      }
    std::vector<const MambaWeights*> candidates;
    for (const auto& m : models) candidates.push_back(&m);
    auto tokens = testing::EvalTextTokens(dir_->string(), 0);
    auto r = CompareModels(original, candidates, tokens, 256);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    if (!r.ok()) return {};
    std::vector<Mean> means(configs.size());
    for (size_t i = 0; i < r->size(); ++i) {
      const double n = static_cast<double>(seeds.size());
      means[i / seeds.size()].delta += 100.0 * ((*r)[i].candidate.perplexity / (*r)[i].reference.perplexity - 1.0) / n;
      means[i / seeds.size()].kl += (*r)[i].mean_kl / n;
    }
    return means;
  }

  static quant::QuantizeOptions Config(const std::string& preset, const std::string& bits, const std::string& scope) {
    quant::QuantizeOptions o;
    o.preset = preset;
    o.bits = bits;
    o.scope = scope;
    return o;
  }

  static fs::path* dir_;
};
fs::path* OutlierQualityTest::dir_ = nullptr;

TEST_F(OutlierQualityTest, W4A8MambaQuantNoWorseThanQuaRot) {
  for (const char* scope : {"linear", "full"}) {
    quant::QuantizeOptions no_s5 = Config("mambaquant", "w4a8", scope);
    no_s5.smooth_s5 = false;
    // With the plain MSE ranges, as when the bug was found: output-aware clipping takes back part
    // of the loss without S5 (full scope: +9.3 % vs quarot +6.4 %), which would blur what S5 does.
    no_s5.weight_clip = "mse";
    const std::vector<double> d =
        MeanDeltas({Config("quarot", "w4a8", scope), Config("mambaquant", "w4a8", scope), no_s5}, {0, 1});
    ASSERT_EQ(d.size(), 3u);
    EXPECT_LE(d[1], d[0] + kSeedTolerancePoints) << scope << ": mambaquant " << d[1] << "% vs quarot " << d[0] << "%";
    // Without S5, R5 spreads the δ outlier over every row of W_xp[δ] and loses to QuaRot by far
    // more than the noise (the bug this guards against; also shows the comparison can fail).
    EXPECT_GT(no_s5.smooth_s5 ? 0.0 : d[2], d[0] + 3.0 * kSeedTolerancePoints) << scope;
  }
}

// At 4-bit weights the output error of every linear is almost all weight rounding (quantize
// --diagnostics: the weight alone gives > 99 % of it on mamba-small), so mambaquant picks each
// row's range by the row's output error on calibration data (model_quantizer.h). On held-out
// text that must lower the KL to float against the same method with the plain MSE ranges, and
// keep it no higher than QuaRot's. KL, not perplexity: it is the quantity both methods minimize
// and far less noisy across seeds (perplexity change is checked above).
TEST_F(OutlierQualityTest, W4A8OutputAwareClippingLowersTheKl) {
  for (const char* scope : {"linear", "full"}) {
    quant::QuantizeOptions mse = Config("mambaquant", "w4a8", scope);
    mse.weight_clip = "mse";
    const std::vector<Mean> m =
        Means({Config("quarot", "w4a8", scope), Config("mambaquant", "w4a8", scope), mse}, {0, 1});
    ASSERT_EQ(m.size(), 3u);
    EXPECT_LT(m[1].kl, m[2].kl) << scope << ": output-aware " << m[1].kl << " vs mse clip " << m[2].kl;
    EXPECT_LE(m[1].kl, m[0].kl) << scope << ": mambaquant " << m[1].kl << " vs quarot " << m[0].kl;
    std::printf("%s w4a8 mean KL (seeds 0, 1): quarot %.5f, mambaquant %.5f, mambaquant with mse clip %.5f; "
                "perplexity %+.2f / %+.2f / %+.2f %%\n",
                scope, m[0].kl, m[1].kl, m[2].kl, m[0].delta, m[1].delta, m[2].delta);
  }
}

TEST_F(OutlierQualityTest, W8A8CloseToFloat) {
  const std::vector<double> d =
      MeanDeltas({Config("mambaquant", "w8a8", "linear"), Config("mambaquant", "w8a8", "full")}, {0, 1});
  ASSERT_EQ(d.size(), 2u);
  EXPECT_LE(std::fabs(d[0]), 1.0) << "linear";
  EXPECT_LE(std::fabs(d[1]), 1.0) << "full";
}

}  // namespace
}  // namespace mq
