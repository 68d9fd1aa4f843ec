#include "vim/vim_quantizer.h"

#include <chrono>
#include <filesystem>
#include <fstream>
#include <random>

#include "model/linear.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/hadamard.h"
#include "quant/klt.h"
#include "quant/model_quantizer.h"
#include "quant/online_rotation.h"
#include "quant/quantized_format.h"
#include "quant/rotation_fusion.h"
#include "quant/smoothing.h"
#include "vim/vim_calibration.h"
#include "vim/vim_metrics.h"
#include "vim/vim_model.h"
#include "vim/vim_quantized_io.h"
#include "vim/vim_rotation_fusion.h"

namespace mq {
namespace {

using json = nlohmann::json;
using quant::Progress;
using quant::Stage;
using Clock = std::chrono::steady_clock;

// Stage entry/progress reporting with per-stage timings; a false from the callback cancels.
class Stages {
 public:
  explicit Stages(const quant::ProgressCallback& cb) : cb_(cb) {}
  Status Enter(Stage s, const std::string& message) {
    Close();
    stage_ = s;
    t0_ = Clock::now();
    open_ = true;
    return Report(0.0, message);
  }
  Status Report(double fraction, const std::string& message) {
    if (cb_ && !cb_(Progress{stage_, fraction, message}))
      return CancelledError(std::string("cancelled during ") + quant::StageName(stage_));
    return OkStatus();
  }
  void Close() {
    if (open_) timings_[quant::StageName(stage_)] = std::chrono::duration<double>(Clock::now() - t0_).count();
    open_ = false;
  }
  const json& timings() const { return timings_; }

 private:
  const quant::ProgressCallback& cb_;
  Stage stage_ = Stage::kLoad;
  Clock::time_point t0_;
  bool open_ = false;
  json timings_ = json::object();
};

StatusOr<quant::QuantSpec> VimSpec(const VimQuantizeOptions& o) {
  quant::QuantizeOptions q;
  q.preset = o.preset;
  q.bits = o.bits;
  q.scope = o.scope;
  q.act_granularity = o.act_granularity;
  q.act_percentile = o.act_percentile;
  q.seed = o.seed;
  q.klt_r1 = o.klt_r1;
  q.klt_r5 = o.klt_r5;
  q.online_r2 = o.online_r2;
  q.smooth_s2 = o.smooth_s2;
  q.r1_cov_all_layers = o.r1_cov_all_layers;
  q.weight_clip = o.weight_clip;
  q.smooth_s4 = o.smooth_s4;
  q.smooth_conv = o.smooth_conv;
  q.state_granularity = o.state_granularity;
  return quant::QuantSpec::FromOptions(q);
}

// S5 is a mambaquant component of this pipeline (the QuantSpec of the main line has no switch for it).
bool UsesS5(const quant::QuantSpec& spec, const VimQuantizeOptions& o) {
  return spec.preset == quant::Preset::kMambaQuant && spec.r5 && o.smooth_s5;
}

// The transforms this pipeline applies, in the quantization_config's vocabulary.
json AppliedTransforms(const quant::QuantSpec& s, bool s5) {
  return {{"fold_norms", s.fold_norms},
          {"r1", s.r1 ? (s.r1_klt ? "klt_hadamard" : "hadamard") : "none"},
          {"r1_covariance", s.r1_cov_all_layers ? "all_layers" : "layer0"},
          {"r5", s.r5 ? (s.r5_klt ? "klt_hadamard" : "hadamard") : "none"},
          {"r5_directions", s.r5 ? 2 : 0},
          {"s5", s5},  // the language path's vocabulary: a bool
          {"r2", s.r2 ? "online_hadamard" : "none"},
          {"s2", s.s2 ? "s_silu" : "none"},
          {"s3", s.s3},
          {"s4", s.s4},
          {"r4", s.r4 ? "online_hadamard" : "none"},
          {"r4_directions", s.r4 ? 2 : 0},
          {"norm_smoothing", s.norm_smoothing}};
}

// `n` distinct indices of [0, count) drawn by a Fisher–Yates prefix on std::mt19937_64's raw
// output (portable across standard libraries); all of them in order when n is 0 or ≥ count.
std::vector<int64_t> SampleImages(int64_t count, int64_t n, uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) idx[i] = i;
  if (n <= 0 || n >= count) return idx;
  std::mt19937_64 rng(seed);
  for (int64_t i = 0; i < n; ++i) std::swap(idx[i], idx[i + static_cast<int64_t>(rng() % static_cast<uint64_t>(count - i))]);
  idx.resize(static_cast<size_t>(n));
  return idx;
}

Status QuantizeLinear(Linear& l, const quant::QuantSpec& spec, const quant::SiteStats* input, const std::string& name) {
  LinearQuant q = QuantizeWeightRows(l.weight, l.out_features, l.in_features, spec.weight_bits, spec.weight_clip);
  q.act_mode = spec.act_mode;
  if (spec.act_mode == ActScaleMode::kPerTensorStatic) {
    if (input == nullptr || input->row_absmax.empty()) return InternalError("no static range for " + name);
    const float range = input->RowAbsmaxPercentile(spec.act_percentile);
    q.act_scale = range > 0.0f ? range / 127.0f : 1.0f;
  }
  l.quant = std::move(q);
  l.weight.clear();
  l.weight.shrink_to_fit();
  return OkStatus();
}

Status QuantizeVimLinears(VimWeights& w, const quant::QuantSpec& spec, const VimCalibrationStats& st) {
  for (size_t i = 0; i < w.layers.size(); ++i) {
    VimLayerWeights& lw = w.layers[i];
    const int l = static_cast<int>(i);
    const std::string p = "layer " + std::to_string(i) + " ";
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.mixer.in_proj, spec, st.Find(l, VimSite::kInProjInput), p + "in_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.mixer.x_proj, spec, st.Find(l, VimSite::kXProjInputForward), p + "x_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.backward.x_proj, spec, st.Find(l, VimSite::kXProjInputBackward), p + "x_proj_b"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.mixer.dt_proj, spec, st.Find(l, VimSite::kDtProjInputForward), p + "dt_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.backward.dt_proj, spec, st.Find(l, VimSite::kDtProjInputBackward), p + "dt_proj_b"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(lw.mixer.out_proj, spec, st.Find(l, VimSite::kOutProjInput), p + "out_proj"));
    if (spec.scope_full) {
      // Both directions: INT8 conv weights (per channel) and input (per token), INT8 h·C.
      for (MambaLayerWeights* L : {&lw.mixer, &lw.backward}) {
        L->quantize_conv_input = true;
        L->quantize_output_product = true;
        L->state_scale_per_channel = spec.state_scale_per_channel;
        L->conv_weight_scale = quant::QuantizeConvWeight(L->conv_weight, w.E(), w.K());
      }
    }
  }
  return OkStatus();
}

// S5 (when `s5`) then R5 on one direction: Hadamard, or KLT-enhanced from that direction's δ
// second moment, taken of the smoothed δ (Σ'_ij = Σ_ij / (s_i s_j)).
Status DtSmoothRotation(const quant::QuantSpec& spec, bool s5, const VimCalibrationStats& stats, int layer,
                        VimSite site, const char* seed_name, MambaLayerWeights& L, int64_t R,
                        quant::QuantAccelerator& accel) {
  const quant::SiteStats* st = stats.Find(layer, site);
  if ((s5 || spec.r5_klt) && st == nullptr)
    return InternalError(std::string("no ") + VimSiteName(site) + " statistics for layer " + std::to_string(layer));
  std::vector<float> s(static_cast<size_t>(R), 1.0f);
  if (s5) {
    s = quant::SmoothingFactors(st->absmax, quant::ColumnAbsMax(L.dt_proj.weight, L.dt_proj.out_features, R),
                                spec.smooth_alpha);
    quant::ApplyDtSmoothing(L, R, s);
  }
  MQ_ASSIGN_OR_RETURN(quant::RandomHadamard h, quant::RandomHadamard::Create(R, spec.SeedFor(seed_name, layer)));
  std::vector<double> r5;
  if (spec.r5_klt) {
    std::vector<double> sigma = st->SecondMoment();
    for (int64_t i = 0; i < R; ++i)
      for (int64_t j = 0; j < R; ++j) sigma[i * R + j] /= static_cast<double>(s[i]) * s[j];
    MQ_ASSIGN_OR_RETURN(r5, quant::KltHadamardRotation(sigma, R, h, accel));
  } else {
    r5 = h.Dense();
  }
  return quant::ApplyDtRotation(L, R, r5, accel);
}

// S4 (when spec.s4) + R4 (when spec.r4) at y = h·C of one direction, with that direction's h and
// C statistics: B rows ÷ s, C rows × s then R4ᵀ, h·R4 online in the scan (exact: A is diagonal).
Status StateSmoothRotation(const quant::QuantSpec& spec, const VimCalibrationStats& stats, int layer, VimSite h_site,
                           VimSite c_site, MambaLayerWeights& L, int64_t R, int64_t N, quant::QuantAccelerator& accel) {
  std::vector<float> s;
  if (spec.s4) {
    const quant::SiteStats* h = stats.Find(layer, h_site);
    const quant::SiteStats* c = stats.Find(layer, c_site);
    if (h == nullptr || c == nullptr)
      return InternalError(std::string("no ") + VimSiteName(h_site) + " statistics for layer " + std::to_string(layer));
    s = quant::SmoothingFactors(h->absmax, c->absmax, spec.smooth_alpha);
  }
  std::vector<double> r4;
  if (spec.r4) {
    MQ_ASSIGN_OR_RETURN(quant::RandomHadamard h4, quant::RandomHadamard::CreatePlain(N));
    r4 = h4.Dense();
  }
  return quant::ApplyStateSmoothRotation(L, R, N, s, r4, accel);
}

}  // namespace

StatusOr<VimQuantizedBuild> BuildQuantizedVim(const VimQuantizeOptions& o, const VimWeights& original,
                                              const ImageSet& calib, const quant::ProgressCallback& progress,
                                              quant::QuantAccelerator* accel_or_null) {
  quant::QuantAccelerator& accel = accel_or_null != nullptr ? *accel_or_null : quant::CpuAccelerator();
  Stages stages(progress);
  VimQuantizedBuild b;
  MQ_ASSIGN_OR_RETURN(b.spec, VimSpec(o));
  const quant::QuantSpec& spec = b.spec;
  if (o.num_samples < 0 || o.num_samples > kMaxVimCalibrationImages)
    return InvalidArgumentError("samples must be in [0, " + std::to_string(kMaxVimCalibrationImages) + "]");
  if (calib.count < 1) return InvalidArgumentError("calibration needs at least one image");
  const int64_t px = original.config.image_numel();
  if (static_cast<int64_t>(calib.images.size()) != calib.count * px)
    return InvalidArgumentError("calibration images do not match the model's input size");
  const std::vector<int64_t> picked = SampleImages(std::min(calib.count, kMaxVimCalibrationImages),
                                                   o.num_samples, o.seed);
  std::vector<float> images(picked.size() * static_cast<size_t>(px));
  for (size_t i = 0; i < picked.size(); ++i)
    std::copy_n(calib.images.data() + picked[i] * px, px, images.data() + i * px);
  const int64_t n_images = static_cast<int64_t>(picked.size());
  b.notes["calibration_images"] = n_images;
  auto report = [&](const char* what) {
    return [&stages, what](int64_t done, int64_t total) {
      return stages.Report(static_cast<double>(done) / static_cast<double>(total),
                           std::to_string(done) + "/" + std::to_string(total) + " " + what).ok();
    };
  };

  // CALIBRATE on the model as the transforms see it (γ folded when R1 follows).
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kCalibrate, "calibrating on " + std::to_string(n_images) + " images"));
  b.model = original;
  VimWeights& w = b.model;
  if (spec.fold_norms) FoldVimNormWeights(w);
  VimCalibrationRequest req;
  if (spec.r1_klt || spec.s3) req.covariance_sites.insert(VimSite::kInProjInput);
  if (spec.r5_klt) {
    req.covariance_sites.insert(VimSite::kDtProjInputForward);
    req.covariance_sites.insert(VimSite::kDtProjInputBackward);
  }
  req.sites = req.covariance_sites;
  const bool s5 = UsesS5(spec, o);
  if (s5) {
    req.sites.insert(VimSite::kDtProjInputForward);
    req.sites.insert(VimSite::kDtProjInputBackward);
  }
  if (spec.s2) req.sites.insert(VimSite::kOutProjInput);
  if (spec.s4)
    req.sites.insert({VimSite::kSsmStateForward, VimSite::kSsmStateBackward, VimSite::kSsmCForward, VimSite::kSsmCBackward});
  if (spec.norm_smoothing) req.sites.insert(VimSite::kInProjInput);
  VimCalibrationStats stats;
  if (!req.sites.empty()) {
    MQ_ASSIGN_OR_RETURN(stats, CalibrateVim(w, images.data(), n_images, req, report("images")));
  }

  // TRANSFORM: S3, R1, then per block R5 (both directions), S2 + R2, S4 + R4 (both directions), or
  // SmoothQuant's γ smoothing.
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kTransform, "fusing transforms"));
  const int64_t D = w.D(), E = w.E(), R = w.R(), N = w.N(), K = w.K();
  const int64_t depth = static_cast<int64_t>(w.layers.size());
  if (spec.s3) {
    // S3 before R1 (whose right product commutes with scaling W_in's rows): both directions read
    // the same conv input x, so one vector divides the x rows of in_proj and multiplies the rows
    // of both conv1d and conv1d_b.
    for (int64_t li = 0; li < depth; ++li) {
      VimLayerWeights& lw = w.layers[static_cast<size_t>(li)];
      const quant::SiteStats* st = stats.Find(static_cast<int>(li), VimSite::kInProjInput);
      if (st == nullptr) return InternalError("no in_proj input statistics for layer " + std::to_string(li));
      const std::vector<float> s = quant::ConvInputFactors(lw.mixer.in_proj.weight, E, D, st->SecondMoment());
      quant::ApplyConvInputSmoothing(lw.mixer, s);
      for (int64_t j = 0; j < E; ++j)
        for (int64_t k = 0; k < K; ++k) lw.backward.conv_weight[j * K + k] *= s[j];
    }
  }
  if (spec.r1) {
    MQ_ASSIGN_OR_RETURN(quant::RandomHadamard h1, quant::RandomHadamard::Create(D, spec.SeedFor("r1")));
    std::vector<double> r1;
    if (spec.r1_klt) {
      std::vector<double> sigma(static_cast<size_t>(D * D), 0.0);
      const int64_t used = spec.r1_cov_all_layers ? depth : 1;
      for (int64_t l = 0; l < used; ++l) {
        const quant::SiteStats* s = stats.Find(static_cast<int>(l), VimSite::kInProjInput);
        if (s == nullptr) return InternalError("no in_proj input statistics for layer " + std::to_string(l));
        const std::vector<double> m = s->SecondMoment();
        for (size_t i = 0; i < sigma.size(); ++i) sigma[i] += m[i];
      }
      b.notes["r1_covariance_layers"] = used;
      MQ_ASSIGN_OR_RETURN(r1, quant::KltHadamardRotation(sigma, D, h1, accel));
    } else {
      r1 = h1.Dense();
    }
    MQ_RETURN_IF_ERROR(ApplyVimResidualRotation(w, r1, accel));
  }
  for (int64_t li = 0; li < depth; ++li) {
    VimLayerWeights& lw = w.layers[static_cast<size_t>(li)];
    const int layer = static_cast<int>(li);
    if (spec.r5) {
      MQ_RETURN_IF_ERROR(DtSmoothRotation(spec, s5, stats, layer, VimSite::kDtProjInputForward, "r5", lw.mixer, R, accel));
      MQ_RETURN_IF_ERROR(DtSmoothRotation(spec, s5, stats, layer, VimSite::kDtProjInputBackward, "r5_b", lw.backward, R, accel));
    }
    if (spec.s2 || spec.r2) {
      // The gate z and out_proj are shared by both directions: one S-SiLU vector and one R2
      // cover the summed, halved SSM outputs of the forward and the backward scan.
      std::vector<float> s;
      if (spec.s2) {
        const quant::SiteStats* st = stats.Find(layer, VimSite::kOutProjInput);
        if (st == nullptr) return InternalError("no out_proj statistics for layer " + std::to_string(li));
        s = quant::SmoothingFactors(st->absmax, quant::ColumnAbsMax(lw.mixer.out_proj.weight, D, E), spec.smooth_alpha);
      }
      std::shared_ptr<const quant::HadamardRowTransform> transform;
      if (spec.r2) {
        const uint64_t seed = spec.SeedFor("r2", layer);
        MQ_ASSIGN_OR_RETURN(quant::RandomHadamard h2, quant::RandomHadamard::Create(E, seed));
        transform = std::make_shared<quant::HadamardRowTransform>(std::move(h2), seed);
      }
      quant::ApplyOutProjSmoothRotation(lw.mixer, s, std::move(transform));
    }
    if (spec.s4 || spec.r4) {
      MQ_RETURN_IF_ERROR(StateSmoothRotation(spec, stats, layer, VimSite::kSsmStateForward, VimSite::kSsmCForward,
                                             lw.mixer, R, N, accel));
      MQ_RETURN_IF_ERROR(StateSmoothRotation(spec, stats, layer, VimSite::kSsmStateBackward, VimSite::kSsmCBackward,
                                             lw.backward, R, N, accel));
    }
    if (spec.norm_smoothing) {
      const quant::SiteStats* st = stats.Find(layer, VimSite::kInProjInput);
      if (st == nullptr) return InternalError("no in_proj statistics for layer " + std::to_string(li));
      quant::ApplyNormSmoothing(lw.mixer, quant::SmoothingFactors(st->absmax, quant::ColumnAbsMax(lw.mixer.in_proj.weight, 2 * E, D),
                                                                  spec.smooth_alpha));
    }
    MQ_RETURN_IF_ERROR(stages.Report(static_cast<double>(li + 1) / static_cast<double>(depth),
                                     "block " + std::to_string(li + 1) + "/" + std::to_string(depth)));
  }

  // QUANTIZE: static scales are read on the transformed model, out_proj's after its online R2.
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kQuantize, "quantizing weights"));
  if (!o.transform_only) {
    VimCalibrationStats ranges;
    if (spec.act_mode == ActScaleMode::kPerTensorStatic) {
      VimCalibrationRequest rr;
      rr.sites = {VimSite::kInProjInput,         VimSite::kXProjInputForward,  VimSite::kXProjInputBackward,
                  VimSite::kDtProjInputForward,  VimSite::kDtProjInputBackward, VimSite::kOutProjInput};
      rr.keep_row_absmax = true;
      rr.out_proj_after_transform = true;
      MQ_ASSIGN_OR_RETURN(ranges, CalibrateVim(w, images.data(), n_images, rr, report("images (static ranges)")));
    }
    MQ_RETURN_IF_ERROR(QuantizeVimLinears(w, spec, ranges));
  }
  stages.Close();
  b.notes["timings_seconds"] = stages.timings();

  // The config block of the export: the spec's own fields, the transforms this pipeline applied,
  // and format version 1 (weights one int8 per element, 4-bit levels too).
  json qc = spec.ToJson();
  qc["transforms"] = AppliedTransforms(spec, s5);
  qc["format_version"] = 1;
  qc["weight_storage"] = quant::WeightStorageName(1, spec.weight_bits);
  qc["model_type"] = "vim";
  b.quantization_config = qc;
  return b;
}

StatusOr<quant::QuantizeResult> QuantizeVimModel(const VimQuantizeOptions& o, const quant::ProgressCallback& progress) {
  if (o.transform_only) return InvalidArgumentError("transform_only models are not exported; use BuildQuantizedVim");
  if (o.output_dir.empty()) return InvalidArgumentError("an output directory is required");
  if (o.calib_path.empty()) return InvalidArgumentError("calibration images (--calib) are required");
  const auto t_start = Clock::now();
  Stages stages(progress);
  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kLoad, "loading " + o.model_dir));
  MQ_ASSIGN_OR_RETURN(VimWeights original, LoadVimWeights(o.model_dir));
  MQ_ASSIGN_OR_RETURN(ImageSet calib, LoadImageSet(o.calib_path, original.config, o.calib_prefix));
  ImageSet eval;
  if (!o.eval_path.empty()) {
    MQ_ASSIGN_OR_RETURN(eval, LoadImageSet(o.eval_path, original.config, o.eval_prefix));
  }
  stages.Close();
  MQ_ASSIGN_OR_RETURN(VimQuantizedBuild b, BuildQuantizedVim(o, original, calib, progress));
  const int64_t classes = original.config.num_classes;

  json evaluation = nullptr;
  if (eval.count > 0) {
    MQ_RETURN_IF_ERROR(stages.Enter(Stage::kEvaluate, "evaluating float vs quantized on " + std::to_string(eval.count) + " images"));
    const std::unique_ptr<VimModel> fm = VimModel::FromWeights(original);
    const std::unique_ptr<VimModel> qm = VimModel::FromWeights(b.model, b.quantization_config.dump());
    std::vector<float> fl(static_cast<size_t>(eval.count * classes)), ql(fl.size());
    MQ_RETURN_IF_ERROR(fm->Classify(eval.images.data(), eval.count, fl.data()));
    MQ_RETURN_IF_ERROR(qm->Classify(eval.images.data(), eval.count, ql.data()));
    const LogitComparison cmp = CompareLogits(fl, ql, classes);
    evaluation = {{"images", o.eval_path}, {"prefix", o.eval_prefix}, {"count", eval.count},
                  {"top1_agreement", cmp.top1_agreement}, {"mean_kl", cmp.mean_kl},
                  {"float_accuracy", nullptr}, {"quantized_accuracy", nullptr}};
    if (!eval.labels.empty()) {
      evaluation["float_accuracy"] = Accuracy(TopClasses(fl, classes), eval.labels);
      evaluation["quantized_accuracy"] = Accuracy(TopClasses(ql, classes), eval.labels);
    }
  }

  MQ_RETURN_IF_ERROR(stages.Enter(Stage::kExport, "writing " + o.output_dir));
  json timings = b.notes["timings_seconds"];
  for (auto& [k, v] : stages.timings().items()) timings[k] = v;
  json notes = b.notes;
  notes.erase("timings_seconds");
  json report = {{"model", o.model_dir},
                 {"model_type", "vim"},
                 {"preset", o.preset},
                 {"bits", b.spec.BitsName()},
                 {"scope", b.spec.scope_full ? "full" : "linear"},
                 {"activation_granularity", o.act_granularity},
                 {"device", "cpu"},
                 {"transforms", b.quantization_config["transforms"]},
                 {"transform_notes", notes},
                 {"calibration", {{"images", o.calib_path}, {"prefix", o.calib_prefix}, {"samples", notes["calibration_images"]},
                                  {"seed", o.seed}}},
                 {"evaluation", evaluation},
                 {"timings_seconds", timings}};
  // The source config.json (already parsed and checked by the load) carries what the engine does
  // not read but clients do: class names (id2label), the input normalization, dataset notes.
  json source_config = json::object();
  {
    std::ifstream in((std::filesystem::path(o.model_dir) / "config.json").string());
    source_config = json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (!source_config.is_object()) source_config = json::object();
    source_config.erase("quantization_config");
  }
  MQ_RETURN_IF_ERROR(ExportQuantizedVim(b.model, source_config, b.quantization_config, o.output_dir, report));
  stages.Close();
  timings["total"] = std::chrono::duration<double>(Clock::now() - t_start).count();
  report["timings_seconds"] = timings;
  std::ofstream((std::filesystem::path(o.output_dir) / "quant_report.json").string(), std::ios::trunc)
      << report.dump(2) << "\n";
  MQ_RETURN_IF_ERROR(stages.Report(1.0, "done"));
  return quant::QuantizeResult{o.output_dir, report.dump()};
}

}  // namespace mq
