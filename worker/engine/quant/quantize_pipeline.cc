#include "quant/quantize_pipeline.h"

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "cpu/mamba_forward.h"
#include "eval/perplexity.h"
#include "model/mamba_weights.h"
#include "quant/accuracy_tuning.h"
#include "quant/calibration.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/hadamard.h"
#include "quant/prepared_quantization.h"
#include "quant/job_spec.h"
#include "quant/klt.h"
#include "quant/model_quantizer.h"
#include "quant/online_rotation.h"
#include "quant/quant_diagnostics.h"
#include "quant/quant_spec.h"
#include "quant/quantized_model_io.h"
#include "quant/rotation_fusion.h"
#include "quant/smoothing.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"

namespace mq::quant {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

StatusOr<std::string> ReadText(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Tracks stage timings and forwards progress; a false from the callback cancels.
class StageTracker {
 public:
  explicit StageTracker(const ProgressCallback& cb) : cb_(cb) {}
  Status Enter(Stage s, const std::string& message) {
    Close();
    stage_ = s;
    started_ = Clock::now();
    open_ = true;
    return Report(0.0, message);
  }
  Status Report(double fraction, const std::string& message) {
    if (cb_ && !cb_(Progress{stage_, fraction, message}))
      return CancelledError(std::string("cancelled during ") + StageName(stage_));
    return OkStatus();
  }
  void Close() {
    if (open_) timings_[StageName(stage_)] = std::chrono::duration<double>(Clock::now() - started_).count();
    open_ = false;
  }
  const json& timings() const { return timings_; }
  Stage stage() const { return stage_; }

 private:
  const ProgressCallback& cb_;
  Stage stage_ = Stage::kLoad;
  Clock::time_point started_;
  bool open_ = false;
  json timings_ = json::object();
};

// Observer for the static-scale pass: records the per-token maxima of each linear's input as the
// quantizer will see it, i.e. after the out_proj online rotation.
class StaticScaleObserver : public ForwardObserver {
 public:
  StaticScaleObserver(const MambaWeights& w, CalibrationStats* stats, bool lm_head)
      : w_(w), stats_(stats), lm_head_(lm_head) {}
  bool Wants(ActivationSite s) const override {
    return s == ActivationSite::kInProjInput || s == ActivationSite::kXProjInput ||
           s == ActivationSite::kDtProjInput || s == ActivationSite::kOutProjInput ||
           (lm_head_ && s == ActivationSite::kFinalNorm);
  }
  void Observe(int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) override {
    std::vector<float> rotated;
    if (site == ActivationSite::kOutProjInput && w_.layers[static_cast<size_t>(layer)].out_proj.input_transform) {
      rotated.assign(x, x + rows * cols);
      w_.layers[static_cast<size_t>(layer)].out_proj.input_transform->ApplyRows(rotated.data(), rows);
      x = rotated.data();
    }
    SiteStats& s = stats_->mutable_sites()[{layer, site}];
    s.channels = cols;
    for (int64_t r = 0; r < rows; ++r) {
      float m = 0.0f;
      for (int64_t c = 0; c < cols; ++c) m = std::max(m, std::fabs(x[r * cols + c]));
      s.row_absmax.push_back(m);
    }
    s.rows += rows;
  }

 private:
  const MambaWeights& w_;
  CalibrationStats* stats_;
  bool lm_head_;  // the LM head is quantized too: its input range is needed
};

// Output-aware W4 clipping (model_quantizer.h) is part of mambaquant at 4 bits with the default
// clipping: an explicit --weight-clip (mse, max) keeps the plain per-row search, for the ablation.
// Models wider than kOutputAwareClipMaxWidth keep the MSE search (the report's note says so).
bool UsesOutputAwareClip(const QuantSpec& spec, const QuantizeOptions& o) {
  return spec.preset == Preset::kMambaQuant && spec.weight_bits == 4 && o.weight_clip == "auto";
}

// E[x xᵀ] of every linear's input on the transformed float model, over the calibration windows;
// out_proj's in the basis its quantizer sees (after the online R2: Σ ← R2ᵀ·Σ·R2). Always the CPU
// forward: the GPU's calibration model cannot run the transformed model (as for static scales).
StatusOr<CalibrationStats> LinearInputMoments(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                              const std::vector<int64_t>& starts, int64_t seq_len,
                                              const std::function<bool(int64_t, int64_t)>& progress) {
  CalibrationRequest req;
  req.covariance_sites = {ActivationSite::kInProjInput, ActivationSite::kXProjInput, ActivationSite::kDtProjInput,
                          ActivationSite::kOutProjInput};
  req.sites = req.covariance_sites;
  MQ_ASSIGN_OR_RETURN(CalibrationStats stats, Calibrate(w, tokens, starts, seq_len, req, progress));
  for (auto& [key, st] : stats.mutable_sites()) {
    if (key.second != ActivationSite::kOutProjInput) continue;
    const auto& r2 = w.layers[static_cast<size_t>(key.first)].out_proj.input_transform;
    if (!r2) continue;
    const int64_t n = st.channels;
    std::vector<float> m(static_cast<size_t>(n * n));
    for (int64_t i = 0; i < n; ++i)  // dsyrk filled the upper triangle
      for (int64_t j = i; j < n; ++j) m[i * n + j] = m[j * n + i] = static_cast<float>(st.moment[i * n + j]);
    r2->ApplyRows(m.data(), n);  // Σ·R2; symmetric Σ, so its transpose is R2ᵀ·Σ
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = i + 1; j < n; ++j) std::swap(m[i * n + j], m[j * n + i]);
    r2->ApplyRows(m.data(), n);  // R2ᵀ·Σ·R2
    for (int64_t i = 0; i < n * n; ++i) st.moment[i] = m[i];
  }
  return stats;
}

StatusOr<std::vector<double>> ResidualRotation(const QuantSpec& spec, const CalibrationStats& stats, int64_t d,
                                               int64_t layers, QuantAccelerator& accel, json* notes) {
  MQ_ASSIGN_OR_RETURN(RandomHadamard h, RandomHadamard::Create(d, spec.SeedFor("r1")));
  if (!spec.r1_klt) return h.Dense();
  std::vector<double> sigma(static_cast<size_t>(d * d), 0.0);
  const int64_t used = spec.r1_cov_all_layers ? layers : 1;
  for (int64_t l = 0; l < used; ++l) {
    const SiteStats* s = stats.Find(static_cast<int>(l), ActivationSite::kInProjInput);
    if (s == nullptr) return InternalError("no in_proj input statistics for layer " + std::to_string(l));
    std::vector<double> m = s->SecondMoment();
    for (size_t i = 0; i < sigma.size(); ++i) sigma[i] += m[i];
  }
  (*notes)["r1_covariance_layers"] = used;
  return KltHadamardRotation(sigma, d, h, accel);
}

}  // namespace

Status QuantizeWithInputs(MambaWeights& w, const QuantSpec& spec, const WeightQuantInputs& in) {
  return QuantizeModelWeights(w, spec, &in.static_stats, in.output_clip ? &in.moments : nullptr);
}

const char* StageName(Stage stage) {
  switch (stage) {
    case Stage::kLoad: return "LOAD";
    case Stage::kCalibrate: return "CALIBRATE";
    case Stage::kTransform: return "TRANSFORM";
    case Stage::kQuantize: return "QUANTIZE";
    case Stage::kEvaluate: return "EVALUATE";
    case Stage::kExport: return "EXPORT";
  }
  return "?";
}

namespace {

// Everything the stages produce, carried from one stage to the next.
struct BuildState {
  QuantSpec spec;
  MambaWeights original;
  MambaWeights model;
  std::vector<int32_t> calib_tokens;
  std::vector<int32_t> holdout_tokens;
  std::vector<int32_t> eval_tokens;
  json notes = json::object();
  WeightQuantInputs weight_inputs;
};

// How far RunBuild goes: the whole build, up to the weight quantization's inputs (the model stays
// float: PrepareQuantization), or the transforms alone (transform_only).
enum class BuildUntil { kQuantized, kWeightInputs };

// LOAD, CALIBRATE, TRANSFORM and QUANTIZE (the last skipped with transform_only).
Status RunBuild(const QuantizeOptions& o, StageTracker& stages, QuantAccelerator& accel, BuildState& b,
                BuildUntil until = BuildUntil::kQuantized) {
  MQ_RETURN_IF_ERROR(ValidateJobOptions(o));  // names and limits: the job spec's (quant/job_spec.h)
  MQ_ASSIGN_OR_RETURN(b.spec, QuantSpec::FromOptions(o));
  const QuantSpec& spec = b.spec;
  MQ_RETURN_IF_ERROR(accel.CheckSupported(spec));
  if (o.calib_text_path.empty()) return InvalidArgumentError("a calibration text is required");
  json& notes = b.notes;

  // LOAD
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kLoad, "loading " + o.model_dir));
  MQ_ASSIGN_OR_RETURN(b.original, LoadMambaWeights(o.model_dir));
  const MambaWeights& original = b.original;
  MQ_RETURN_IF_ERROR(CheckW8Layers(o.bits, o.w8_layers, static_cast<int64_t>(original.layers.size())));
  MQ_ASSIGN_OR_RETURN(Tokenizer tokenizer,
                      Tokenizer::LoadFromFile((std::filesystem::path(o.model_dir) / "tokenizer.json").string()));
  const int32_t eos = static_cast<int32_t>(original.config.eos_token_id);
  MQ_ASSIGN_OR_RETURN(std::string calib_text, ReadText(o.calib_text_path));
  MQ_ASSIGN_OR_RETURN(b.calib_tokens, TokenizeDocuments(tokenizer, calib_text, eos));
  if (o.calib_holdout_fraction > 0.0) {
    const size_t keep = b.calib_tokens.size() - static_cast<size_t>(o.calib_holdout_fraction * b.calib_tokens.size());
    b.holdout_tokens.assign(b.calib_tokens.begin() + keep, b.calib_tokens.end());
    b.calib_tokens.resize(keep);
  }
  const std::vector<int32_t>& calib_tokens = b.calib_tokens;
  if (!o.eval_text_path.empty()) {
    MQ_ASSIGN_OR_RETURN(std::string eval_text, ReadText(o.eval_text_path));
    MQ_ASSIGN_OR_RETURN(b.eval_tokens, TokenizeDocuments(tokenizer, eval_text, eos));
  }
  MQ_RETURN_IF_ERROR(stages.Report(1.0, "loaded"));

  // CALIBRATE on the model as the transforms will see it (γ folded when R1 follows).
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kCalibrate, "calibrating"));
  b.model = original;
  MambaWeights& w = b.model;
  if (spec.fold_norms) FoldNormWeights(w);
  MQ_ASSIGN_OR_RETURN(std::vector<int64_t> starts,
                      SampleWindowStarts(static_cast<int64_t>(calib_tokens.size()), o.seq_len, o.num_samples, o.seed));
  CalibrationRequest req;
  if (spec.r1_klt || spec.s3) req.covariance_sites.insert(ActivationSite::kInProjInput);
  if (spec.r5_klt) req.covariance_sites.insert(ActivationSite::kDtProjInput);
  req.sites = req.covariance_sites;
  if (spec.s5) req.sites.insert(ActivationSite::kDtProjInput);
  if (spec.s2) req.sites.insert(ActivationSite::kOutProjInput);
  if (spec.s4) {
    req.sites.insert(ActivationSite::kSsmState);
    req.sites.insert(ActivationSite::kSsmC);
  }
  if (spec.norm_smoothing) req.sites.insert(ActivationSite::kInProjInput);
  CalibrationStats stats;
  if (!req.sites.empty()) {
    MQ_ASSIGN_OR_RETURN(stats, accel.Calibrate(w, calib_tokens, starts, o.seq_len, req, [&](int64_t done, int64_t total) {
      return stages.Report(static_cast<double>(done) / static_cast<double>(total),
                           std::to_string(done) + "/" + std::to_string(total) + " windows").ok();
    }));
  }

  // TRANSFORM: R1, then per layer R5, S2+R2, S4+R4, or SmoothQuant's γ smoothing.
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kTransform, "fusing transforms"));
  const int64_t d = w.d(), E = w.E(), N = w.N(), R = w.R();
  const int64_t layers = static_cast<int64_t>(w.layers.size());
  if (spec.s3) {
    // Before R1, whose right product commutes with scaling W_in's rows.
    for (int64_t li = 0; li < layers; ++li) {
      const SiteStats* st = stats.Find(static_cast<int>(li), ActivationSite::kInProjInput);
      if (st == nullptr) return InternalError("no in_proj statistics for layer " + std::to_string(li));
      ApplyConvInputSmoothing(w.layers[static_cast<size_t>(li)],
                              ConvInputFactors(w.layers[static_cast<size_t>(li)].in_proj.weight, E, d, st->SecondMoment()));
    }
  }
  if (spec.r1) {
    MQ_ASSIGN_OR_RETURN(std::vector<double> r1, ResidualRotation(spec, stats, d, layers, accel, &notes));
    MQ_RETURN_IF_ERROR(ApplyResidualRotation(w, r1, accel));
  }
  for (int64_t li = 0; li < layers; ++li) {
    MambaLayerWeights& L = w.layers[static_cast<size_t>(li)];
    const int layer = static_cast<int>(li);
    if (spec.r5) {
      MQ_ASSIGN_OR_RETURN(RandomHadamard h5, RandomHadamard::Create(R, spec.SeedFor("r5", layer)));
      const SiteStats* dt = stats.Find(layer, ActivationSite::kDtProjInput);
      if ((spec.s5 || spec.r5_klt) && dt == nullptr) return InternalError("no dt statistics for layer " + std::to_string(li));
      // S5 first: R5 mixes every δ row of W_xp (quantized per row) with every other, so one large
      // δ channel would set the 4-bit grid of all of them; smoothing equalizes them exactly first.
      std::vector<float> s5;
      if (spec.s5) {
        s5 = SmoothingFactors(dt->absmax, ColumnAbsMax(L.dt_proj.weight, E, R), spec.smooth_alpha);
        ApplyDtSmoothing(L, R, s5);
      }
      std::vector<double> r5;
      if (spec.r5_klt) {
        // Σ of the smoothed δ' = δ / s is diag(1/s)·Σ·diag(1/s): no second calibration pass.
        std::vector<double> sigma = dt->SecondMoment();
        if (!s5.empty())
          for (int64_t i = 0; i < R; ++i)
            for (int64_t j = 0; j < R; ++j) sigma[i * R + j] /= static_cast<double>(s5[i]) * s5[j];
        MQ_ASSIGN_OR_RETURN(r5, KltHadamardRotation(sigma, R, h5, accel));
      } else {
        r5 = h5.Dense();
      }
      MQ_RETURN_IF_ERROR(ApplyDtRotation(L, R, r5, accel));
    }
    if (spec.s2 || spec.r2) {
      std::vector<float> s;
      if (spec.s2) {
        const SiteStats* st = stats.Find(layer, ActivationSite::kOutProjInput);
        if (st == nullptr) return InternalError("no out_proj statistics for layer " + std::to_string(li));
        s = SmoothingFactors(st->absmax, ColumnAbsMax(L.out_proj.weight, d, E), spec.smooth_alpha);
      }
      std::shared_ptr<const HadamardRowTransform> transform;
      if (spec.r2) {
        const uint64_t seed = spec.SeedFor("r2", layer);
        MQ_ASSIGN_OR_RETURN(RandomHadamard h2, RandomHadamard::Create(E, seed));
        transform = std::make_shared<HadamardRowTransform>(std::move(h2), seed);
      }
      ApplyOutProjSmoothRotation(L, s, std::move(transform));
    }
    if (spec.s4 || spec.r4) {
      std::vector<float> s;
      if (spec.s4) {
        const SiteStats* h = stats.Find(layer, ActivationSite::kSsmState);
        const SiteStats* c = stats.Find(layer, ActivationSite::kSsmC);
        if (h == nullptr || c == nullptr) return InternalError("no state statistics for layer " + std::to_string(li));
        s = SmoothingFactors(h->absmax, c->absmax, spec.smooth_alpha);
      }
      std::vector<double> r4;
      if (spec.r4) {
        MQ_ASSIGN_OR_RETURN(RandomHadamard h4, RandomHadamard::CreatePlain(N));
        r4 = h4.Dense();
      }
      MQ_RETURN_IF_ERROR(ApplyStateSmoothRotation(L, R, N, s, r4, accel));
    }
    if (spec.norm_smoothing) {
      const SiteStats* st = stats.Find(layer, ActivationSite::kInProjInput);
      if (st == nullptr) return InternalError("no in_proj statistics for layer " + std::to_string(li));
      ApplyNormSmoothing(L, SmoothingFactors(st->absmax, ColumnAbsMax(L.in_proj.weight, 2 * E, d), spec.smooth_alpha));
    }
    MQ_RETURN_IF_ERROR(stages.Report(static_cast<double>(li + 1) / static_cast<double>(layers),
                                     "layer " + std::to_string(li + 1) + "/" + std::to_string(layers)));
  }

  // QUANTIZE
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kQuantize, "quantizing weights"));
  if (o.diagnostics) {
    const std::vector<int64_t> few(starts.begin(), starts.begin() + std::min<size_t>(starts.size(), 8));
    MQ_ASSIGN_OR_RETURN(json acts, ActivationQuantErrors(w, spec, calib_tokens, few, o.seq_len));
    notes["diagnostics"] = {{"weights", WeightQuantErrors(w, spec)}, {"activations", acts}};
  }
  if (!o.transform_only) {
    WeightQuantInputs& in = b.weight_inputs;
    CalibrationStats& static_stats = in.static_stats;
    if (spec.act_mode == ActScaleMode::kPerTensorStatic) {
      StaticScaleObserver observer(w, &static_stats, spec.quantize_lm_head);
      MQ_RETURN_IF_ERROR(ObserveWindows(w, calib_tokens, starts, o.seq_len, &observer, [&](int64_t done, int64_t total) {
        return stages.Report(0.9 * static_cast<double>(done) / static_cast<double>(total), "static activation ranges").ok();
      }));
    }
    CalibrationStats& moments = in.moments;
    bool& output_clip = in.output_clip;
    output_clip = UsesOutputAwareClip(spec, o);
    if (output_clip && std::max(E, d) > kOutputAwareClipMaxWidth) {
      output_clip = false;
      notes["weight_clip"] = "mse (output-aware clipping needs E[x xᵀ] of every linear input: wider than " +
                             std::to_string(kOutputAwareClipMaxWidth) + ")";
    }
    if (output_clip) {
      const size_t windows = std::min<size_t>(
          starts.size(), static_cast<size_t>(std::max<int64_t>(1, kOutputAwareClipMaxTokens / o.seq_len)));
      const std::vector<int64_t> first(starts.begin(), starts.begin() + static_cast<std::ptrdiff_t>(windows));
      MQ_ASSIGN_OR_RETURN(moments, LinearInputMoments(w, calib_tokens, first, o.seq_len, [&](int64_t done, int64_t total) {
        return stages.Report(0.9 * static_cast<double>(done) / static_cast<double>(total), "linear input moments").ok();
      }));
      notes["weight_clip"] = "output_aware";
    }
    if (until == BuildUntil::kQuantized) MQ_RETURN_IF_ERROR(QuantizeWithInputs(w, spec, in));
  }
  MQ_RETURN_IF_ERROR(stages.Report(1.0, "quantized"));
  return OkStatus();
}

}  // namespace

StatusOr<PreparedQuantization> PrepareQuantization(const QuantizeOptions& options, const ProgressCallback& progress,
                                                   QuantAccelerator& accel) {
  if (options.transform_only) return InvalidArgumentError("PrepareQuantization: transform_only builds quantize nothing");
  StageTracker stages(progress);
  BuildState b;
  MQ_RETURN_IF_ERROR(RunBuild(options, stages, accel, b, BuildUntil::kWeightInputs));
  PreparedQuantization p;
  p.spec = std::move(b.spec);
  p.original = std::move(b.original);
  p.transformed = std::move(b.model);
  p.holdout_tokens = std::move(b.holdout_tokens);
  p.inputs = std::move(b.weight_inputs);
  return p;
}

StatusOr<MambaWeights> QuantizePrepared(const PreparedQuantization& p, const std::vector<int>& w8_layers) {
  QuantSpec spec = p.spec;
  MQ_RETURN_IF_ERROR(CheckW8Layers(spec.BitsName(), w8_layers, static_cast<int64_t>(p.transformed.layers.size())));
  spec.w8_layers = w8_layers;
  std::sort(spec.w8_layers.begin(), spec.w8_layers.end());
  MambaWeights w = p.transformed;
  MQ_RETURN_IF_ERROR(QuantizeWithInputs(w, spec, p.inputs));
  return w;
}

StatusOr<LayerWidthChoices> LayerWidthChoices::Create(const PreparedQuantization& p) {
  if (p.spec.weight_bits != 4) return InvalidArgumentError("layer width choices are for w4a8 models");
  std::vector<int> all(p.transformed.layers.size());
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<int>(i);
  LayerWidthChoices c;
  MQ_ASSIGN_OR_RETURN(c.narrow_, QuantizePrepared(p, {}));
  MQ_ASSIGN_OR_RETURN(c.wide_, QuantizePrepared(p, all));
  return c;
}

StatusOr<MambaWeights> LayerWidthChoices::Assemble(const std::vector<int>& w8_layers) const {
  MQ_RETURN_IF_ERROR(CheckW8Layers("w4a8", w8_layers, layers()));
  MambaWeights w = narrow_;
  for (int l : w8_layers) w.layers[static_cast<size_t>(l)] = wide_.layers[static_cast<size_t>(l)];
  return w;
}

StatusOr<QuantizedModelBuild> BuildQuantizedModel(const QuantizeOptions& options, const ProgressCallback& progress,
                                                  QuantAccelerator* accel) {
  StageTracker stages(progress);
  BuildState b;
  MQ_RETURN_IF_ERROR(RunBuild(options, stages, accel != nullptr ? *accel : CpuAccelerator(), b));
  return QuantizedModelBuild{std::move(b.original), std::move(b.model), b.spec.ToJson().dump(), std::move(b.holdout_tokens)};
}

StatusOr<QuantizeResult> QuantizeModel(const QuantizeOptions& requested, const ProgressCallback& progress,
                                       QuantAccelerator* accel_or_null) {
  QuantAccelerator& accel = accel_or_null != nullptr ? *accel_or_null : CpuAccelerator();
  if (requested.transform_only) return InvalidArgumentError("transform_only models are not exported; use BuildQuantizedModel");
  if (requested.output_dir.empty()) return InvalidArgumentError("an output directory is required");
  MQ_RETURN_IF_ERROR(ValidateJobOptions(requested));  // before the accuracy-driven trials, too
  const auto t_start = Clock::now();
  // Accuracy-driven mode: the trials pick the options; the job then builds the chosen one.
  QuantizeOptions o = requested;
  json tuning = nullptr;
  if (requested.tolerable_loss_percent > 0.0) {
    MQ_ASSIGN_OR_RETURN(TuningOutcome t, TuneForTolerableLoss(requested, accel, progress));
    o = t.chosen;
    tuning = std::move(t.report);
  }
  StageTracker stages(progress);
  BuildState b;
  MQ_RETURN_IF_ERROR(RunBuild(o, stages, accel, b));
  const QuantSpec& spec = b.spec;
  const MambaWeights& w = b.model;
  const json& notes = b.notes;

  // EVALUATE
  json evaluation = nullptr;
  if (!b.eval_tokens.empty()) {
    MQ_RETURN_IF_ERROR(stages.Enter(Stage::kEvaluate, "evaluating float vs quantized"));
    MQ_ASSIGN_OR_RETURN(ComparisonResult cmp, accel.Compare(b.original, w, b.eval_tokens, o.eval_window, [&](int64_t done, int64_t total) {
      return stages.Report(static_cast<double>(done) / static_cast<double>(total),
                           std::to_string(done) + "/" + std::to_string(total) + " windows").ok();
    }));
    evaluation = {{"text", o.eval_text_path},
                  {"window", o.eval_window},
                  {"tokens_scored", cmp.reference.tokens_scored},
                  {"float_perplexity", cmp.reference.perplexity},
                  {"quantized_perplexity", cmp.candidate.perplexity},
                  {"relative_change", cmp.candidate.perplexity / cmp.reference.perplexity - 1.0},
                  {"top1_agreement", cmp.top1_agreement},
                  {"mean_kl", cmp.mean_kl}};
  }

  // EXPORT
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kExport, "writing " + o.output_dir));
  json qc = spec.ToJson();
  json report = {{"model", o.model_dir},
                 {"preset", o.preset},
                 {"bits", spec.BitsName()},
                 {"w8_layers", spec.w8_layers},
                 {"scope", spec.scope_full ? "full" : "linear"},
                 {"activation_granularity", o.act_granularity},
                 {"device", accel.name()},
                 {"transform_only", o.transform_only},
                 {"transforms", qc["transforms"]},
                 {"transform_notes", notes},
                 {"calibration", {{"text", o.calib_text_path},
                                  {"text_tokens", b.calib_tokens.size()},
                                  {"samples", o.num_samples},
                                  {"seq_len", o.seq_len},
                                  {"seed", o.seed}}},
                 {"evaluation", evaluation},
                 {"tuning", tuning}};
  // The report inside the export is rewritten below with the export stage's own time.
  report["timings_seconds"] = stages.timings();
  report["device_step_seconds"] = accel.step_seconds();
  MQ_RETURN_IF_ERROR(ExportQuantizedModel(w, spec, o.model_dir, o.output_dir, report));
  stages.Close();
  json timings = stages.timings();
  timings["total"] = std::chrono::duration<double>(Clock::now() - t_start).count();
  report["timings_seconds"] = timings;
  // Rewritten with the export stage's time included.
  std::ofstream((std::filesystem::path(o.output_dir) / "quant_report.json").string(), std::ios::trunc)
      << report.dump(2) << "\n";
  MQ_RETURN_IF_ERROR(stages.Report(1.0, "done"));
  return QuantizeResult{o.output_dir, report.dump()};
}

}  // namespace mq::quant
