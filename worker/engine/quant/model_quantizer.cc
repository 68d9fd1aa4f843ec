#include "quant/model_quantizer.h"

#include <algorithm>
#include <cmath>

namespace mq::quant {
namespace {

Status QuantizeLinear(Linear& l, const QuantSpec& spec, const SiteStats* input_stats, const std::string& name) {
  LinearQuant q = QuantizeWeightRows(l.weight, l.out_features, l.in_features, spec.weight_bits, spec.weight_clip);
  q.act_mode = spec.act_mode;
  if (spec.act_mode == ActScaleMode::kPerTensorStatic) {
    if (input_stats == nullptr || input_stats->row_absmax.empty())
      return InternalError("no calibration statistics for the static scale of " + name);
    const float range = input_stats->RowAbsmaxPercentile(spec.act_percentile);
    q.act_scale = range > 0.0f ? range / 127.0f : 1.0f;
  }
  l.quant = std::move(q);
  l.weight.clear();
  l.weight.shrink_to_fit();
  return OkStatus();
}

}  // namespace

std::vector<float> QuantizeConvWeight(std::vector<float>& conv_weight, int64_t channels, int64_t kernel) {
  LinearQuant q = QuantizeWeightRows(conv_weight, channels, kernel, 8);
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t k = 0; k < kernel; ++k)
      conv_weight[c * kernel + k] = static_cast<float>(q.qweight[c * kernel + k]) * q.weight_scale[c];
  return q.weight_scale;
}

Status QuantizeModelWeights(MambaWeights& w, const QuantSpec& spec, const CalibrationStats* stats) {
  if (spec.act_mode == ActScaleMode::kPerTensorStatic && stats == nullptr)
    return InternalError("static activation scales need calibration statistics");
  auto site = [&](int layer, ActivationSite s) { return stats ? stats->Find(layer, s) : nullptr; };
  for (size_t i = 0; i < w.layers.size(); ++i) {
    MambaLayerWeights& L = w.layers[i];
    const int layer = static_cast<int>(i);
    const std::string p = "layer " + std::to_string(i) + " ";
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.in_proj, spec, site(layer, ActivationSite::kInProjInput), p + "in_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.x_proj, spec, site(layer, ActivationSite::kXProjInput), p + "x_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.dt_proj, spec, site(layer, ActivationSite::kDtProjInput), p + "dt_proj"));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.out_proj, spec, site(layer, ActivationSite::kOutProjInput), p + "out_proj"));
    if (spec.scope_full) {
      L.quantize_conv_input = true;
      L.quantize_output_product = true;
      L.state_scale_per_channel = spec.state_scale_per_channel;
      L.conv_weight_scale = QuantizeConvWeight(L.conv_weight, w.E(), w.K());
    }
  }
  if (spec.quantize_lm_head) {
    MQ_RETURN_IF_ERROR(QuantizeLinear(w.lm_head, spec, site(static_cast<int>(w.layers.size()), ActivationSite::kFinalNorm),
                                      "lm_head"));
  }
  return OkStatus();
}

}  // namespace mq::quant
