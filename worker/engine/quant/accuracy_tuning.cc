#include "quant/accuracy_tuning.h"

#include <chrono>
#include <cmath>
#include <cstdio>

#include "eval/perplexity.h"
#include "quant/quant_spec.h"

namespace mq::quant {
namespace {

// Held out when the caller did not choose: a quarter of the calibration text, which keeps ~3/4
// for the calibration windows (mamba-small's calib.txt: ~7k held-out tokens, 28 windows of 256).
constexpr double kDefaultHoldout = 0.25;

}  // namespace

std::vector<TuningCandidate> TuningCandidates(const QuantizeOptions& base) {
  std::vector<TuningCandidate> c;
  auto with = [&](const std::string& preset, const std::string& act) {
    QuantizeOptions o = base;
    o.preset = preset;
    o.act_granularity = act;
    return o;
  };
  // Static per-tensor scales cost less than per-token maxima; quarot and mambaquant add the same
  // online R2 Hadamard to rtn (S2's S-SiLU and the other fused steps are free at inference).
  c.push_back({"rtn per_tensor", with("rtn", "per_tensor"), 0});
  c.push_back({"rtn per_token", with("rtn", "per_token"), 1});
  for (const char* preset : {"quarot", "mambaquant"})
    c.push_back({std::string(preset) + " per_tensor", with(preset, "per_tensor"), 2});
  for (const char* preset : {"quarot", "mambaquant"})
    c.push_back({std::string(preset) + " per_token", with(preset, "per_token"), 3});
  QuantizeOptions r5 = with("mambaquant", "per_token");
  r5.klt_r5 = false;
  c.push_back({"mambaquant per_token, Hadamard R5", r5, 3});
  QuantizeOptions clip = with("mambaquant", "per_token");
  clip.weight_clip = base.bits == "w4a8" ? "max" : "mse";
  c.push_back({"mambaquant per_token, weight clip " + clip.weight_clip, clip, 3});
  QuantizeOptions no_s5 = with("mambaquant", "per_token");
  no_s5.smooth_s5 = false;
  c.push_back({"mambaquant per_token, no S5", no_s5, 3});
  // The smoothing steps' migration strength either side of SmoothQuant's 0.5 (the job's own α when
  // it set another): less moves less of an activation outlier into the weights' grid (better for
  // 4-bit rows), more flattens the activations further.
  for (double alpha : {0.3, 0.7}) {
    if (alpha == base.smooth_alpha) continue;
    QuantizeOptions a = with("mambaquant", "per_token");
    a.smooth_alpha = alpha;
    char name[64];
    std::snprintf(name, sizeof name, "mambaquant per_token, smoothing alpha %.1f", alpha);
    c.push_back({name, a, 3});
  }
  return c;
}

StatusOr<TuningOutcome> TuneForTolerableLoss(const QuantizeOptions& base, QuantAccelerator& accel,
                                             const ProgressCallback& progress) {
  const double budget = base.tolerable_loss_percent;
  if (!(budget > 0.0 && budget <= 100.0)) return InvalidArgumentError("tolerable_loss_percent must be in (0, 100]");
  QuantizeOptions common = base;
  common.tolerable_loss_percent = 0.0;
  common.eval_text_path.clear();
  common.transform_only = false;
  if (common.calib_holdout_fraction <= 0.0) common.calib_holdout_fraction = kDefaultHoldout;
  const std::vector<TuningCandidate> candidates = TuningCandidates(common);
  nlohmann::json trials = nlohmann::json::array();
  int best = -1, chosen = -1;  // lowest loss of all; lowest loss within budget of the kept tier
  double best_loss = 0.0, chosen_loss = 0.0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const TuningCandidate& cand = candidates[i];
    // A tier is finished once every configuration in it was scored: stop at the first that met.
    if (chosen >= 0 && cand.tier != candidates[static_cast<size_t>(chosen)].tier) break;
    const QuantizeOptions& o = cand.options;
    if (progress && !progress(Progress{Stage::kCalibrate, static_cast<double>(i) / candidates.size(),
                                        "tuning: trial " + std::to_string(i + 1) + "/" +
                                            std::to_string(candidates.size()) + " " + cand.name}))
      return CancelledError("cancelled during tuning");
    auto spec = QuantSpec::FromOptions(o);
    if (!spec.ok()) return spec.status();
    if (Status s = accel.CheckSupported(*spec); !s.ok()) {
      trials.push_back({{"name", cand.name}, {"tier", cand.tier}, {"skipped", s.message()}});
      continue;
    }
    const auto t0 = std::chrono::steady_clock::now();
    MQ_ASSIGN_OR_RETURN(QuantizedModelBuild b, BuildQuantizedModel(o, nullptr, &accel));
    if (b.holdout_tokens.size() < static_cast<size_t>(o.eval_window) + 1)
      return InvalidArgumentError("the calibration text's held-out tail has " + std::to_string(b.holdout_tokens.size()) +
                                  " tokens, fewer than one evaluation window; use a longer calibration text");
    MQ_ASSIGN_OR_RETURN(ComparisonResult cmp, accel.Compare(b.original, b.model, b.holdout_tokens, o.eval_window, nullptr));
    const double loss = 100.0 * (cmp.candidate.perplexity / cmp.reference.perplexity - 1.0);
    const bool ok = loss <= budget;
    trials.push_back({{"name", cand.name}, {"tier", cand.tier}, {"preset", o.preset}, {"activations", o.act_granularity},
                      {"options", nlohmann::json::parse(b.spec_json)["transforms"]},
                      {"weight_clip", o.weight_clip}, {"smooth_alpha", o.smooth_alpha},
                      {"float_perplexity", cmp.reference.perplexity}, {"holdout_perplexity", cmp.candidate.perplexity},
                      {"loss_percent", loss}, {"within_budget", ok},
                      {"seconds", std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count()}});
    if (best < 0 || loss < best_loss) {
      best = static_cast<int>(i);
      best_loss = loss;
    }
    if (ok && (chosen < 0 || loss < chosen_loss)) {
      chosen = static_cast<int>(i);
      chosen_loss = loss;
    }
  }
  if (best < 0) return FailedPreconditionError("tuning: the device could run none of the configurations");
  const bool met = chosen >= 0;
  const TuningCandidate& keep = candidates[static_cast<size_t>(met ? chosen : best)];
  TuningOutcome out;
  out.chosen = keep.options;
  out.chosen.eval_text_path = base.eval_text_path;
  out.report = {{"tolerable_loss_percent", budget},
                {"holdout_fraction", common.calib_holdout_fraction},
                {"met", met},
                {"chosen", keep.name},
                {"why", met ? "the lowest held-out loss within the budget among the configurations of the cheapest "
                              "inference-cost tier that has one within the budget (tier " +
                                  std::to_string(keep.tier) + ")"
                            : "no configuration met the budget; kept the lowest held-out loss"},
                {"trials", trials}};
  return out;
}

}  // namespace mq::quant
