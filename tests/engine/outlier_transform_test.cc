// Outlier variants (model/outlier_transform.h, `mq-engine transform`) must compute the original
// float function: logits equal to the fixture's independent reference to ‖Δ‖/‖ref‖ ≤ 1e-4, while
// the activations at the chosen sites really carry the outliers.
#include <algorithm>
#include <cmath>
#include <filesystem>

#include <unistd.h>

#include <gtest/gtest.h>

#include "cpu/mamba_forward.h"
#include "model/outlier_transform.h"
#include "quant/calibration.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

// Logits of `w` on the reference windows of fixture `paths`, relative error to the reference.
double ReferenceError(const MambaWeights& w, const testing::FixturePaths& paths) {
  auto ref = SafetensorsFile::Open(paths.reference);
  EXPECT_TRUE(ref.ok());
  if (!ref.ok()) return 1e9;
  const TensorView* ids_view = (*ref)->Find("input_ids");
  const int64_t B = ids_view->shape[0], L = ids_view->shape[1];
  std::vector<int32_t> ids = testing::ToInt32(*ids_view);
  std::vector<float> ref_logits = ToFloat32(*(*ref)->Find("logits"));
  cpu::MambaState state = cpu::MambaState::Zeros(w.config, B);
  std::vector<float> logits;
  EXPECT_TRUE(cpu::MambaForward(w, ids.data(), B, L, &state, &logits).ok());
  return testing::RelError(logits.data(), ref_logits.data(), logits.size());
}

// max over channels of RMS / median channel RMS of one site's activations in layer `layer`.
double ChannelSpread(const MambaWeights& w, int layer, ActivationSite site) {
  auto tokens = testing::EvalTextTokens(testing::RepoPath("models/mamba-tiny"), 0);
  quant::CalibrationRequest req;
  req.sites = {site};
  req.covariance_sites = {site};
  auto stats = quant::Calibrate(w, tokens, {0, 1000}, 128, req);
  EXPECT_TRUE(stats.ok());
  if (!stats.ok()) return 0;
  const quant::SiteStats* s = stats->Find(layer, site);
  std::vector<double> m = s->SecondMoment(), diag;
  for (int64_t i = 0; i < s->channels; ++i) diag.push_back(m[i * s->channels + i]);
  std::sort(diag.begin(), diag.end());
  return std::sqrt(diag.back() / diag[diag.size() / 2]);
}

struct Case {
  std::string fixture, spec;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.fixture << "/" << c.spec; }

class OutlierVariantTest : public ::testing::TestWithParam<Case> {};

TEST_P(OutlierVariantTest, ReproducesTheFloatLogits) {
  const Case c = GetParam();
  auto paths = testing::Fixture(c.fixture);
  MQ_REQUIRE_FIXTURE(paths, c.fixture);
  auto w = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const MambaWeights original = *w;
  auto spec = OutlierSpec::Parse(c.spec, 7);
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  auto applied = ApplyOutliers(*w, *spec);
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_LE(ReferenceError(*w, paths), 1e-4) << c.spec;
  // The same error bound holds for the unmodified model: the variant adds nothing measurable.
  EXPECT_LE(ReferenceError(original, paths), 1e-4);
  // And the variant did change the weights it names.
  EXPECT_TRUE(w->layers[0].x_proj.weight != original.layers[0].x_proj.weight ||
              w->layers[0].in_proj.weight != original.layers[0].in_proj.weight);
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* f : {"tiny", "small"})
    for (const char* s : {"default", "norm:3x100", "conv:4x80", "dt:2x100", "state:3x50"}) cases.push_back({f, s});
  return cases;
}
INSTANTIATE_TEST_SUITE_P(Fixtures, OutlierVariantTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           std::string n = i.param.fixture + "_" + i.param.spec;
                           for (char& ch : n)
                             if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
                           return n;
                         });

TEST(OutlierVariant, ActivationsCarryTheOutliers) {
  auto w = LoadMambaWeights(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(w.ok());
  const double dt_before = ChannelSpread(*w, 1, ActivationSite::kDtProjInput);
  const double norm_before = ChannelSpread(*w, 1, ActivationSite::kInProjInput);
  const double conv_before = ChannelSpread(*w, 1, ActivationSite::kConvInput);
  auto spec = OutlierSpec::Parse("norm:1x60,conv:1x40,dt:1x50", 0);
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(ApplyOutliers(*w, *spec).ok());
  // One channel ×c over the median channel: the spread grows to about c (less if the channel
  // picked was below the median before, hence the margin).
  EXPECT_GT(ChannelSpread(*w, 1, ActivationSite::kDtProjInput), 10.0);
  EXPECT_GT(ChannelSpread(*w, 1, ActivationSite::kInProjInput), 10.0);
  EXPECT_GT(ChannelSpread(*w, 1, ActivationSite::kConvInput), 10.0);
  EXPECT_LT(dt_before, 10.0);
  EXPECT_LT(norm_before, 10.0);
  EXPECT_LT(conv_before, 10.0);
}

TEST(OutlierVariant, SameSeedSameChannelsAndNormChannelsSharedAcrossLayers) {
  auto a = LoadMambaWeights(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(a.ok());
  MambaWeights b = *a, c = *a;
  auto r1 = ApplyOutliers(*a, *OutlierSpec::Parse("default", 3));
  auto r2 = ApplyOutliers(b, *OutlierSpec::Parse("default", 3));
  auto r3 = ApplyOutliers(c, *OutlierSpec::Parse("default", 4));
  ASSERT_TRUE(r1.ok() && r2.ok() && r3.ok());
  EXPECT_EQ(*r1, *r2);
  EXPECT_NE(*r1, *r3);
  std::vector<nlohmann::json> norm;
  for (const auto& e : (*r1)["layers"])
    if (e["site"] == "norm") norm.push_back(e["channels"]);
  ASSERT_EQ(norm.size(), a->layers.size());
  for (const auto& ch : norm) EXPECT_EQ(ch, norm[0]);
}

TEST(OutlierVariant, BadSpecsAreRefused) {
  for (const char* bad : {"", "norm", "norm:2", "foo:1x10", "norm:0x10", "norm:65x10", "norm:2x0.5", "norm:2x1e5",
                          "norm:2x10,norm:1x10", "dt:2xabc", "dt:2x10junk"}) {
    auto s = OutlierSpec::Parse(bad, 0);
    EXPECT_EQ(s.status().code(), StatusCode::kInvalidArgument) << bad;
  }
  auto w = LoadMambaWeights(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(w.ok());
  auto too_many = ApplyOutliers(*w, *OutlierSpec::Parse("dt:5x10", 0));  // tiny has dt_rank 4
  EXPECT_EQ(too_many.status().code(), StatusCode::kInvalidArgument);
}

TEST(OutlierVariant, TransformCommandWritesALoadableEquivalentModel) {
  const fs::path out = fs::temp_directory_path() / ("mq-outlier-" + std::to_string(::getpid()));
  fs::remove_all(out);
  const auto r = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " transform --model " +
                                     testing::RepoPath("models/mamba-tiny") + " --out " + out.string() +
                                     " --outliers default --seed 5 2>&1");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto w = LoadMambaWeights(out.string());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_LE(ReferenceError(*w, testing::Fixture("tiny")), 1e-4);
  EXPECT_TRUE(fs::exists(out / "outliers.json"));
  EXPECT_TRUE(fs::exists(out / "tokenizer.json"));
  // A second run refuses to overwrite it.
  const auto again = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " transform --model " +
                                         testing::RepoPath("models/mamba-tiny") + " --out " + out.string() +
                                         " --outliers default 2>&1");
  EXPECT_NE(again.exit_code, 0);
  EXPECT_NE(again.output.find("refusing to overwrite"), std::string::npos) << again.output;
  fs::remove_all(out);
}

}  // namespace
}  // namespace mq
