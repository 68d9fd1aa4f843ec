// The accuracy-driven mode (quant/accuracy_tuning.h) on mamba-tiny: it keeps the cheapest
// configuration within the budget, says when none is, and QuantizeModel exports the kept one
// with the trials in its report.
#include <algorithm>
#include <filesystem>
#include <map>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <unistd.h>

#include "quant/accuracy_tuning.h"
#include "quant/cpu_quant_accelerator.h"
#include "test_paths.h"

namespace mq {
namespace {

quant::QuantizeOptions TinyOptions(double budget) {
  quant::QuantizeOptions o;
  o.model_dir = testing::RepoPath("models/mamba-tiny");
  o.calib_text_path = testing::RepoPath("models/text/calib.txt");
  o.num_samples = 16;
  o.seq_len = 128;
  o.bits = "w8a8";
  o.tolerable_loss_percent = budget;
  return o;
}

TEST(AccuracyTuning, LooseBudgetKeepsTheFirstTrialAndTightBudgetReportsNotMet) {
  auto loose = quant::TuneForTolerableLoss(TinyOptions(50.0), quant::CpuAccelerator(), nullptr);
  ASSERT_TRUE(loose.ok()) << loose.status().ToString();
  ASSERT_EQ(loose->report["trials"].size(), 1u);  // the first trial met it: nothing more was built
  EXPECT_TRUE(loose->report["met"].get<bool>());
  EXPECT_EQ(loose->chosen.preset, quant::TuningCandidates(TinyOptions(50.0))[0].options.preset);
  EXPECT_LE(loose->report["trials"][0]["loss_percent"].get<double>(), 50.0);

  // No 4-bit model is within 1e-6 % (an 8-bit one can even come out below float on the short
  // held-out tail): every candidate is tried and the lowest loss is kept.
  quant::QuantizeOptions w4 = TinyOptions(1e-6);
  w4.bits = "w4a8";
  auto tight = quant::TuneForTolerableLoss(w4, quant::CpuAccelerator(), nullptr);
  ASSERT_TRUE(tight.ok()) << tight.status().ToString();
  EXPECT_FALSE(tight->report["met"].get<bool>());
  const auto& trials = tight->report["trials"];
  EXPECT_EQ(trials.size(), quant::TuningCandidates(w4).size());
  double lowest = 1e9;
  std::string lowest_name;
  for (const auto& t : trials)
    if (t["loss_percent"].get<double>() < lowest) {
      lowest = t["loss_percent"].get<double>();
      lowest_name = t["name"].get<std::string>();
    }
  EXPECT_EQ(tight->report["chosen"].get<std::string>(), lowest_name);
  // Trials are evaluated on the calibration tail, not on a tuning-free text: the float
  // perplexity is the same for every trial.
  for (const auto& t : trials) EXPECT_EQ(t["float_perplexity"], trials[0]["float_perplexity"]);
  // The smoothing-α trials record their α and build a different model than α 0.5 (the smoothing
  // steps are in the W4A8 mambaquant configuration: S2, S5).
  double loss_default = -1.0;
  std::vector<double> loss_alpha;
  for (const auto& t : trials) {
    const std::string name = t["name"].get<std::string>();
    if (name == "mambaquant per_token") loss_default = t["loss_percent"].get<double>();
    if (name.find("smoothing alpha") != std::string::npos) {
      EXPECT_NE(t["smooth_alpha"].get<double>(), 0.5) << name;
      loss_alpha.push_back(t["loss_percent"].get<double>());
    }
  }
  ASSERT_EQ(loss_alpha.size(), 2u);
  for (double l : loss_alpha) EXPECT_NE(l, loss_default);

  // The kept configuration is the lowest loss within the budget of the cheapest cost tier that
  // has one: with the budget at the second-lowest loss of a tier whose two best configurations
  // beat every cheaper one, both of them meet it, the cheaper tiers do not, and the lower wins
  // (the old rule kept whichever came first in the list).
  std::map<int, std::vector<std::pair<double, std::string>>> by_tier;
  for (const auto& t : trials)
    if (t.contains("loss_percent"))
      by_tier[t["tier"].get<int>()].push_back({t["loss_percent"].get<double>(), t["name"].get<std::string>()});
  double budget = -1.0, cheaper_min = 1e9;
  std::string want;
  for (auto& [tier, v] : by_tier) {
    std::sort(v.begin(), v.end());
    if (v.size() >= 2 && v[1].first < cheaper_min && v[0].first < v[1].first) {
      budget = v[1].first;
      want = v[0].second;
      break;
    }
    cheaper_min = std::min(cheaper_min, v.front().first);
  }
  ASSERT_GT(budget, 0.0) << "no tier of mamba-tiny W4A8 has two configurations better than every cheaper one";
  quant::QuantizeOptions mid = w4;
  mid.tolerable_loss_percent = budget;
  auto kept = quant::TuneForTolerableLoss(mid, quant::CpuAccelerator(), nullptr);
  ASSERT_TRUE(kept.ok()) << kept.status().ToString();
  EXPECT_TRUE(kept->report["met"].get<bool>());
  EXPECT_EQ(kept->report["chosen"].get<std::string>(), want);
  std::printf("[tuning] budget %.3f %%: kept %s of %zu trials\n", budget, want.c_str(), kept->report["trials"].size());
}

TEST(AccuracyTuning, CandidatesComeCheapestTierFirst) {
  for (const char* bits : {"w8a8", "w4a8"}) {
    quant::QuantizeOptions o = TinyOptions(5.0);
    o.bits = bits;
    const auto c = quant::TuningCandidates(o);
    ASSERT_GE(c.size(), 4u);
    EXPECT_EQ(c.front().tier, 0);
    for (size_t i = 1; i < c.size(); ++i) EXPECT_LE(c[i - 1].tier, c[i].tier) << c[i].name;
    // Same preset and activations, same cost: every mambaquant per-token variant shares quarot
    // per-token's tier.
    int quarot_token = -1;
    for (const auto& x : c)
      if (x.name == "quarot per_token") quarot_token = x.tier;
    for (const auto& x : c)
      if (x.options.preset == "mambaquant" && x.options.act_granularity == "per_token") EXPECT_EQ(x.tier, quarot_token);
  }
}

TEST(AccuracyTuning, CandidatesTrySmoothingAlphaAroundTheJobsOwn) {
  auto alphas = [](double base_alpha) {
    quant::QuantizeOptions o = TinyOptions(5.0);
    o.smooth_alpha = base_alpha;
    std::vector<double> a;
    for (const quant::TuningCandidate& c : quant::TuningCandidates(o)) {
      if (c.name.find("smoothing alpha") != std::string::npos) {
        EXPECT_EQ(c.options.preset, "mambaquant") << c.name;
        a.push_back(c.options.smooth_alpha);
      } else {
        EXPECT_EQ(c.options.smooth_alpha, base_alpha) << c.name;  // every other trial keeps the job's α
      }
    }
    return a;
  };
  EXPECT_EQ(alphas(0.5), (std::vector<double>{0.3, 0.7}));
  EXPECT_EQ(alphas(0.3), (std::vector<double>{0.7}));  // the job's own α is not tried twice
}

TEST(AccuracyTuning, BadBudgetIsRefused) {
  EXPECT_EQ(quant::TuneForTolerableLoss(TinyOptions(0.0), quant::CpuAccelerator(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(quant::TuneForTolerableLoss(TinyOptions(101.0), quant::CpuAccelerator(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
  quant::QuantizeOptions o = TinyOptions(5.0);
  o.calib_holdout_fraction = 0.9;
  EXPECT_EQ(quant::TuneForTolerableLoss(o, quant::CpuAccelerator(), nullptr).status().code(),
            StatusCode::kInvalidArgument);
}

TEST(AccuracyTuning, QuantizeModelExportsTheChosenConfigurationWithItsTrials) {
  const auto out = std::filesystem::temp_directory_path() / ("mq-tuning-" + std::to_string(::getpid()));
  std::filesystem::remove_all(out);
  quant::QuantizeOptions o = TinyOptions(2.0);
  o.output_dir = out.string();
  auto r = quant::QuantizeModel(o, nullptr);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  const auto report = nlohmann::json::parse(r->report_json);
  ASSERT_TRUE(report["tuning"].is_object());
  const auto& t = report["tuning"];
  ASSERT_FALSE(t["trials"].empty());
  const auto& last = t["trials"].back();
  if (t["met"].get<bool>()) {
    EXPECT_EQ(t["chosen"], last["name"]);  // tuning stops at the first success
    EXPECT_LE(last["loss_percent"].get<double>(), 2.0);
    for (size_t i = 0; i + 1 < t["trials"].size(); ++i)
      if (!t["trials"][i].contains("skipped")) EXPECT_GT(t["trials"][i]["loss_percent"].get<double>(), 2.0);
  }
  EXPECT_EQ(report["preset"], last["preset"]);
  std::filesystem::remove_all(out);
}

}  // namespace
}  // namespace mq
