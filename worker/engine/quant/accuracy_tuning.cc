#include "quant/accuracy_tuning.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "eval/perplexity.h"
#include "quant/prepared_quantization.h"
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

namespace {

// One scored trial: its loss and the report entry.
struct Scored {
  double loss = 0.0;
  nlohmann::json entry;
};

StatusOr<Scored> Score(QuantAccelerator& accel, const MambaWeights& original, const MambaWeights& model,
                       const std::vector<int32_t>& holdout, int window, double budget) {
  if (holdout.size() < static_cast<size_t>(window) + 1)
    return InvalidArgumentError("the calibration text's held-out tail has " + std::to_string(holdout.size()) +
                                " tokens, fewer than one evaluation window; use a longer calibration text");
  MQ_ASSIGN_OR_RETURN(ComparisonResult cmp, accel.Compare(original, model, holdout, window, nullptr));
  Scored s;
  s.loss = 100.0 * (cmp.candidate.perplexity / cmp.reference.perplexity - 1.0);
  s.entry = {{"float_perplexity", cmp.reference.perplexity}, {"holdout_perplexity", cmp.candidate.perplexity},
             {"loss_percent", s.loss}, {"within_budget", s.loss <= budget}};
  return s;
}

std::string LayerList(const std::vector<int>& layers) {
  std::string out;
  for (int l : layers) out += (out.empty() ? "" : ",") + std::to_string(l);
  return out;
}

}  // namespace

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
  // Every configuration scored: its options, name and tier (the mixed-precision ones are added
  // to the list as they are made).
  std::vector<TuningCandidate> tried;
  int best = -1, chosen = -1;  // into `tried`: lowest loss of all; lowest loss within budget of the kept tier
  double best_loss = 0.0, chosen_loss = 0.0;
  auto record = [&](const TuningCandidate& cand, const Scored& sc) {
    tried.push_back(cand);
    const int i = static_cast<int>(tried.size()) - 1;
    if (best < 0 || sc.loss < best_loss) best = i, best_loss = sc.loss;
    if (sc.loss <= budget && (chosen < 0 || sc.loss < chosen_loss)) chosen = i, chosen_loss = sc.loss;
  };
  const double steps = static_cast<double>(candidates.size());
  for (size_t i = 0; i < candidates.size(); ++i) {
    const TuningCandidate& cand = candidates[i];
    // A tier is finished once every configuration in it was scored: stop at the first that met.
    if (chosen >= 0 && cand.tier != tried[static_cast<size_t>(chosen)].tier) break;
    const QuantizeOptions& o = cand.options;
    if (progress && !progress(Progress{Stage::kCalibrate, static_cast<double>(i) / steps,
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
    MQ_ASSIGN_OR_RETURN(Scored sc, Score(accel, b.original, b.model, b.holdout_tokens, o.eval_window, budget));
    nlohmann::json entry = {{"name", cand.name}, {"tier", cand.tier}, {"preset", o.preset},
                            {"activations", o.act_granularity},
                            {"options", nlohmann::json::parse(b.spec_json)["transforms"]},
                            {"weight_clip", o.weight_clip}, {"smooth_alpha", o.smooth_alpha}};
    entry.update(sc.entry);
    entry["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    trials.push_back(std::move(entry));
    record(cand, sc);
  }
  if (best < 0) return FailedPreconditionError("tuning: the device could run none of the configurations");

  // Mixed precision (w4a8 only, when no tier met the budget): the lowest-loss configuration so far
  // with some layers' linears at 8-bit weights. Each layer is first scored alone at 8 bits (its
  // sensitivity: how much of the 4-bit loss it carries); then the k most sensitive together, k = 1,
  // 2, ..., until one meets the budget (k = 1 is the most sensitive layer's own model: its score
  // is reused, not evaluated again). Fewer 8-bit layers cost less memory and bandwidth, so the
  // first k that meets it is kept (tier 4 + k - 1). The trials reuse one calibrated and
  // transformed model quantized once at each width (quant/prepared_quantization.h): a trial
  // assembles its layers and costs one evaluation.
  nlohmann::json mixed = nullptr;
  if (chosen < 0 && common.bits == "w4a8") {
    const TuningCandidate base_cand = tried[static_cast<size_t>(best)];
    if (progress && !progress(Progress{Stage::kCalibrate, 0.99, "tuning: mixed precision on " + base_cand.name}))
      return CancelledError("cancelled during tuning");
    MQ_ASSIGN_OR_RETURN(PreparedQuantization prep, PrepareQuantization(base_cand.options, nullptr, accel));
    MQ_ASSIGN_OR_RETURN(LayerWidthChoices widths, LayerWidthChoices::Create(prep));
    const int layers = static_cast<int>(widths.layers());
    const int top_tier = candidates.back().tier;
    // Scores base_cand with `w8` at 8 bits; the entry's seconds are the evaluation's.
    auto evaluate = [&](const std::vector<int>& w8, const std::string& phase) -> StatusOr<Scored> {
      if (progress && !progress(Progress{Stage::kCalibrate, 0.99, "tuning: " + phase + ", 8-bit layers " + LayerList(w8)}))
        return CancelledError("cancelled during tuning");
      const auto t0 = std::chrono::steady_clock::now();
      MQ_ASSIGN_OR_RETURN(MambaWeights q, widths.Assemble(w8));
      MQ_ASSIGN_OR_RETURN(Scored sc, Score(accel, prep.original, q, prep.holdout_tokens, base_cand.options.eval_window, budget));
      sc.entry["seconds"] = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      return sc;
    };
    // Lists a scored trial; `keepable` ones (the cumulative sets) are configurations the tuner may keep.
    auto add = [&](const std::vector<int>& w8, const std::string& phase, int tier, const Scored& sc, bool keepable) {
      TuningCandidate cand = base_cand;
      cand.options.w8_layers = w8;
      cand.name = base_cand.name + ", 8-bit layers " + LayerList(w8);
      cand.tier = tier;
      nlohmann::json entry = {{"name", cand.name}, {"tier", tier}, {"phase", phase}, {"preset", cand.options.preset},
                              {"activations", cand.options.act_granularity}, {"w8_layers", w8}};
      entry.update(sc.entry);
      trials.push_back(std::move(entry));
      if (keepable) record(cand, sc);
    };
    std::vector<Scored> alone;                        // by layer: the loss with that layer alone at 8 bits
    std::vector<std::pair<double, int>> sensitivity;  // (that loss, layer)
    for (int l = 0; l < layers; ++l) {
      MQ_ASSIGN_OR_RETURN(Scored sc, evaluate({l}, "layer sensitivity"));
      add({l}, "layer sensitivity", top_tier + 1, sc, false);
      sensitivity.push_back({sc.loss, l});
      alone.push_back(std::move(sc));
    }
    std::sort(sensitivity.begin(), sensitivity.end());
    std::vector<int> order, w8;
    for (const auto& [loss, l] : sensitivity) order.push_back(l);
    for (int k = 1; k <= layers && chosen < 0; ++k) {
      w8.push_back(order[static_cast<size_t>(k - 1)]);
      if (k == 1) {
        add(w8, "mixed precision", top_tier + k, alone[static_cast<size_t>(w8[0])], true);
      } else {
        MQ_ASSIGN_OR_RETURN(Scored sc, evaluate(w8, "mixed precision"));
        add(w8, "mixed precision", top_tier + k, sc, true);
      }
    }
    mixed = {{"on", base_cand.name}, {"sensitivity_order", order}};
  }

  const bool met = chosen >= 0;
  const TuningCandidate& keep = tried[static_cast<size_t>(met ? chosen : best)];
  TuningOutcome out;
  out.chosen = keep.options;
  out.chosen.eval_text_path = base.eval_text_path;
  out.report = {{"tolerable_loss_percent", budget},
                {"holdout_fraction", common.calib_holdout_fraction},
                {"met", met},
                {"chosen", keep.name},
                {"w8_layers", keep.options.w8_layers},
                {"why", met ? "the lowest held-out loss within the budget among the configurations of the cheapest "
                              "inference-cost tier that has one within the budget (tier " +
                                  std::to_string(keep.tier) + ")"
                            : "no configuration met the budget; kept the lowest held-out loss"},
                {"mixed_precision", mixed},
                {"trials", trials}};
  return out;
}

}  // namespace mq::quant
