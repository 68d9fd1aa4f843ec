// What a quantization does, resolved from the user's options: the preset's transforms (with
// the mambaquant ablation switches applied), the bit widths, the scope and the activation
// granularity. Stored in the exported config.json as `quantization_config`.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/linear.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"

namespace mq::quant {

enum class Preset { kRtn, kSmoothQuant, kQuaRot, kMambaQuant };
const char* PresetName(Preset p);

struct QuantSpec {
  Preset preset = Preset::kMambaQuant;
  int weight_bits = 8;          // 8 (w8a8) or 4 (w4a8)
  bool scope_full = false;      // also quantize conv input/weight and both operands of h·C
  ActScaleMode act_mode = ActScaleMode::kPerToken;
  double act_percentile = 99.9; // static scales: percentile of the per-token maxima
  double smooth_alpha = 0.5;
  uint64_t seed = 0;
  bool quantize_lm_head = false;
  WeightClip weight_clip = WeightClip::kMax;
  bool state_scale_per_channel = false;  // scope full: h scales per (step, channel)
  std::vector<int> w8_layers;   // w4a8 mixed precision: layers kept at 8-bit weights, ascending

  // Transforms (derived from the preset; the mambaquant ones are switchable).
  bool fold_norms = false;      // γ into the next linear, LM head untied
  bool r1 = false;              // rotate the residual stream
  bool r1_klt = false;          //   with K·H̃ instead of H̃
  bool r1_cov_all_layers = true;// Σ for R1 summed over layers (false: layer 0, as the reference code)
  bool r5 = false;              // rotate the dt path
  bool r5_klt = false;
  bool s5 = false;              // smoothing of δ before R5 (W_xp[δ] rows ÷ s, W_dt columns × s)
  bool r2 = false;              // online Hadamard before out_proj
  bool s2 = false;              // smoothing at out_proj with S-SiLU
  bool s4 = false;              // smoothing of h·C (scope full)
  bool r4 = false;              // online Hadamard of h (scope full)
  bool s3 = false;              // conv input equalization (scope full): in_proj x rows ÷ s, conv rows × s
  bool norm_smoothing = false;  // SmoothQuant into γ

  static StatusOr<QuantSpec> FromOptions(const QuantizeOptions& options);
  nlohmann::json ToJson() const;
  static StatusOr<QuantSpec> FromJson(const nlohmann::json& j);
  std::string BitsName() const { return weight_bits == 4 ? "w4a8" : "w8a8"; }
  // The weight width of a layer's four linears: weight_bits, or 8 for a layer in w8_layers.
  int LayerWeightBits(int64_t layer) const;
  // Seeds of the individual random Hadamards, derived from `seed` so that each is distinct.
  uint64_t SeedFor(const char* what, int layer = -1) const;
};

}  // namespace mq::quant
