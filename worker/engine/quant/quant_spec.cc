#include "quant/quant_spec.h"

#include <algorithm>

#include "quant/job_spec.h"
#include "quant/quantized_format.h"

namespace mq::quant {

const char* PresetName(Preset p) {
  switch (p) {
    case Preset::kRtn: return "rtn";
    case Preset::kSmoothQuant: return "smoothquant";
    case Preset::kQuaRot: return "quarot";
    case Preset::kMambaQuant: return "mambaquant";
  }
  return "?";
}

StatusOr<QuantSpec> QuantSpec::FromOptions(const QuantizeOptions& o) {
  // The names and the percentile are the job spec's (quant/job_spec.h); past this check every
  // choice below is one of its names.
  MQ_RETURN_IF_ERROR(CheckSpecChoices(o));
  QuantSpec s;
  if (o.preset == "rtn") {
    s.preset = Preset::kRtn;
  } else if (o.preset == "smoothquant") {
    s.preset = Preset::kSmoothQuant;
    s.norm_smoothing = true;
  } else if (o.preset == "quarot") {
    s.preset = Preset::kQuaRot;
    s.fold_norms = s.r1 = s.r2 = true;
  } else {
    s.preset = Preset::kMambaQuant;
    s.fold_norms = s.r1 = s.r5 = true;  // the Hadamard base; KLT and the rest are components
    s.r1_klt = o.klt_r1;
    s.r5_klt = o.klt_r5;
    s.s5 = o.smooth_s5;
    s.r2 = o.online_r2;
    s.s2 = o.smooth_s2;
  }
  s.weight_bits = o.bits == "w4a8" ? 4 : 8;
  s.scope_full = o.scope == "full";
  if (s.scope_full && s.preset == Preset::kMambaQuant) {
    s.s4 = s.r4 = o.smooth_s4;
    s.s3 = o.smooth_conv;
  }
  s.act_mode = o.act_granularity == "per_tensor" ? ActScaleMode::kPerTensorStatic : ActScaleMode::kPerToken;
  s.act_percentile = o.act_percentile;
  s.smooth_alpha = o.smooth_alpha;
  s.r1_cov_all_layers = o.r1_cov_all_layers;
  s.quantize_lm_head = o.quantize_lm_head;
  if (o.weight_clip == "auto") {
    // 8-bit grids are fine enough that clipping gains nothing; 4-bit rows lose much less to
    // rounding with an MSE-chosen range (rtn w4a8 on mamba-small: +4.85% -> +3.90% perplexity).
    s.weight_clip = s.weight_bits == 4 ? WeightClip::kMse : WeightClip::kMax;
  } else {
    s.weight_clip = o.weight_clip == "mse" ? WeightClip::kMse : WeightClip::kMax;
  }
  s.state_scale_per_channel = o.state_granularity == "per_step_channel";
  s.seed = o.seed;
  s.w8_layers = o.w8_layers;  // CheckSpecChoices: w4a8 only, no repeats
  std::sort(s.w8_layers.begin(), s.w8_layers.end());
  return s;
}

nlohmann::json QuantSpec::ToJson() const {
  nlohmann::json transforms = {
      {"fold_norms", fold_norms}, {"r1", r1 ? (r1_klt ? "klt_hadamard" : "hadamard") : "none"},
      {"r1_covariance", r1_cov_all_layers ? "all_layers" : "layer0"},
      {"r5", r5 ? (r5_klt ? "klt_hadamard" : "hadamard") : "none"}, {"s5", s5},
      {"r2", r2 ? "online_hadamard" : "none"}, {"s2", s2 ? "s_silu" : "none"},
      {"s4", s4}, {"s3", s3}, {"r4", r4 ? "online_hadamard" : "none"}, {"norm_smoothing", norm_smoothing}};
  return {{"quant_method", "mambaquant-serve"},
          {"format_version", kQuantizedFormatVersion},
          {"preset", PresetName(preset)},
          {"bits", BitsName()},
          {"weight_bits", weight_bits},
          {"activation_bits", 8},
          {"scope", scope_full ? "full" : "linear"},
          {"weight_granularity", "per_channel"},
          {"weight_symmetric", true},
          {"weight_storage", WeightStorageName(kQuantizedFormatVersion, weight_bits)},
          {"weight_clip", weight_clip == WeightClip::kMse ? "mse" : "max"},
          {"state_granularity", state_scale_per_channel ? "per_step_channel" : "per_step"},
          {"activation_granularity", act_mode == ActScaleMode::kPerToken ? "per_token" : "per_tensor"},
          {"activation_symmetric", true},
          {"activation_percentile", act_percentile},
          {"smooth_alpha", smooth_alpha},
          {"seed", seed},
          {"quantize_lm_head", quantize_lm_head},
          {"transforms", transforms},
          {"online_transforms", nlohmann::json::array()},
          {"w8_layers", w8_layers}};
}

int QuantSpec::LayerWeightBits(int64_t layer) const {
  return std::binary_search(w8_layers.begin(), w8_layers.end(), layer) ? 8 : weight_bits;
}

StatusOr<QuantSpec> QuantSpec::FromJson(const nlohmann::json& j) {
  try {
    QuantizeOptions o;
    o.preset = j.at("preset").get<std::string>();
    o.bits = j.at("bits").get<std::string>();
    o.scope = j.at("scope").get<std::string>();
    o.act_granularity = j.at("activation_granularity").get<std::string>();
    o.act_percentile = j.value("activation_percentile", 99.9);
    o.smooth_alpha = j.value("smooth_alpha", 0.5);
    o.seed = j.value("seed", uint64_t{0});
    o.quantize_lm_head = j.value("quantize_lm_head", false);
    o.weight_clip = j.value("weight_clip", "max");
    o.state_granularity = j.value("state_granularity", "per_step");
    // Range and order are format/quantization_metadata.h's check (every loader runs it first);
    // CheckSpecChoices below refuses them on anything but w4a8 and repeats.
    o.w8_layers = j.value("w8_layers", std::vector<int>{});
    const nlohmann::json& t = j.at("transforms");
    o.klt_r1 = t.value("r1", "none") == "klt_hadamard";
    o.klt_r5 = t.value("r5", "none") == "klt_hadamard";
    o.smooth_s5 = t.value("s5", false);  // exports before S5 existed had none
    o.online_r2 = t.value("r2", "none") != "none";
    o.smooth_s2 = t.value("s2", "none") != "none";
    o.smooth_s4 = t.value("s4", false);
    o.smooth_conv = t.value("s3", false);  // exports before S3 existed had none
    o.r1_cov_all_layers = t.value("r1_covariance", "all_layers") == "all_layers";
    const int version = j.at("format_version").get<int>();
    if (!IsReadableFormatVersion(version))
      return Status(StatusCode::kUnimplemented, "quantization_config format_version " + std::to_string(version) +
                                                    " is not supported (this build reads " +
                                                    std::to_string(kOldestQuantizedFormatVersion) + " to " +
                                                    std::to_string(kQuantizedFormatVersion) + ")");
    if (!o.w8_layers.empty() && version < kMixedWidthFormatVersion)
      return InvalidArgumentError("quantization_config w8_layers needs format_version " + std::to_string(kMixedWidthFormatVersion) + "; this export says " +
                                  std::to_string(version));
    return FromOptions(o);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(std::string("quantization_config is malformed: ") + e.what());
  }
}

uint64_t QuantSpec::SeedFor(const char* what, int layer) const {
  // FNV-1a of the name mixed with the job seed and the layer: stable and distinct per use.
  uint64_t h = 1469598103934665603ull ^ seed;
  for (const char* p = what; *p; ++p) h = (h ^ static_cast<uint8_t>(*p)) * 1099511628211ull;
  h = (h ^ static_cast<uint64_t>(layer + 1)) * 1099511628211ull;
  return h;
}

}  // namespace mq::quant
