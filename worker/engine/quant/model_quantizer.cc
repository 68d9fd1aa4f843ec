#include "quant/model_quantizer.h"

#include <algorithm>
#include <cmath>

#include <cblas.h>

namespace mq::quant {
namespace {

// `bits`: the linear's weight width (QuantSpec::LayerWeightBits of its layer).
Status QuantizeLinear(Linear& l, const QuantSpec& spec, int bits, const SiteStats* input_stats, const std::string& name,
                      const SiteStats* input_moment = nullptr) {
  LinearQuant q;
  if (input_moment != nullptr) {
    if (input_moment->channels != l.in_features || input_moment->rows < 1 ||
        input_moment->moment.size() != static_cast<size_t>(l.in_features * l.in_features))
      return InternalError("input moments of " + name + " do not fit its weight");
    q = OutputAwareRowQuant(l.weight, l.out_features, l.in_features, bits, input_moment->SecondMoment());
  } else {
    q = QuantizeWeightRows(l.weight, l.out_features, l.in_features, bits, spec.weight_clip);
  }
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

LinearQuant OutputAwareRowQuant(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                                const std::vector<double>& sigma) {
  const float qmax = bits == 4 ? 7.0f : 127.0f;
  // Σ + λI in float (it only ranks candidates), λ = 1 % of the mean diagonal.
  double mean_diag = 0.0;
  for (int64_t i = 0; i < cols; ++i) mean_diag += sigma[i * cols + i];
  const double damp = 0.01 * mean_diag / static_cast<double>(cols);
  std::vector<float> sig(static_cast<size_t>(cols * cols));
  for (int64_t i = 0; i < cols; ++i)
    for (int64_t j = 0; j < cols; ++j) sig[i * cols + j] = static_cast<float>(sigma[i * cols + j] + (i == j ? damp : 0.0));
  std::vector<float> amax(static_cast<size_t>(rows), 0.0f);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) amax[r] = std::max(amax[r], std::fabs(w[r * cols + c]));
  auto scale_of = [&](int64_t r, int step) {
    return amax[r] > 0.0f ? (1.0f - 0.02f * static_cast<float>(step)) * amax[r] / qmax : 1.0f;
  };
  std::vector<double> best(static_cast<size_t>(rows), HUGE_VAL);
  std::vector<int> best_step(static_cast<size_t>(rows), 0);
  std::vector<float> e(static_cast<size_t>(rows * cols)), g(static_cast<size_t>(rows * cols));
  for (int step = 0; step <= 25; ++step) {
    for (int64_t r = 0; r < rows; ++r) {
      const float s = scale_of(r, step);
      for (int64_t c = 0; c < cols; ++c) {
        const float v = w[r * cols + c];
        e[r * cols + c] = v - std::clamp(std::nearbyint(v / s), -qmax, qmax) * s;
      }
    }
    // G = E·Σ; the row's output error is ⟨G_r, E_r⟩.
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(cols),
                static_cast<int>(cols), 1.0f, e.data(), static_cast<int>(cols), sig.data(), static_cast<int>(cols), 0.0f,
                g.data(), static_cast<int>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      double err = 0.0;
      for (int64_t c = 0; c < cols; ++c) err += static_cast<double>(g[r * cols + c]) * e[r * cols + c];
      if (err < best[r]) {
        best[r] = err;
        best_step[r] = step;
      }
    }
  }
  LinearQuant q;
  q.weight_bits = bits;
  q.qweight.resize(static_cast<size_t>(rows * cols));
  q.weight_scale.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float s = scale_of(r, best_step[r]);
    q.weight_scale[r] = s;
    for (int64_t c = 0; c < cols; ++c)
      q.qweight[r * cols + c] = static_cast<int8_t>(std::clamp(std::nearbyint(w[r * cols + c] / s), -qmax, qmax));
  }
  return q;
}

std::vector<float> QuantizeConvWeight(std::vector<float>& conv_weight, int64_t channels, int64_t kernel) {
  LinearQuant q = QuantizeWeightRows(conv_weight, channels, kernel, 8);
  for (int64_t c = 0; c < channels; ++c)
    for (int64_t k = 0; k < kernel; ++k)
      conv_weight[c * kernel + k] = static_cast<float>(q.qweight[c * kernel + k]) * q.weight_scale[c];
  return q.weight_scale;
}

Status QuantizeModelWeights(MambaWeights& w, const QuantSpec& spec, const CalibrationStats* stats,
                            const CalibrationStats* input_moments) {
  if (spec.act_mode == ActScaleMode::kPerTensorStatic && stats == nullptr)
    return InternalError("static activation scales need calibration statistics");
  auto site = [&](int layer, ActivationSite s) { return stats ? stats->Find(layer, s) : nullptr; };
  auto moment = [&](int layer, ActivationSite s) { return input_moments ? input_moments->Find(layer, s) : nullptr; };
  for (size_t i = 0; i < w.layers.size(); ++i) {
    MambaLayerWeights& L = w.layers[i];
    const int layer = static_cast<int>(i);
    const std::string p = "layer " + std::to_string(i) + " ";
    const int bits = spec.LayerWeightBits(layer);
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.in_proj, spec, bits, site(layer, ActivationSite::kInProjInput), p + "in_proj",
                                      moment(layer, ActivationSite::kInProjInput)));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.x_proj, spec, bits, site(layer, ActivationSite::kXProjInput), p + "x_proj",
                                      moment(layer, ActivationSite::kXProjInput)));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.dt_proj, spec, bits, site(layer, ActivationSite::kDtProjInput), p + "dt_proj",
                                      moment(layer, ActivationSite::kDtProjInput)));
    MQ_RETURN_IF_ERROR(QuantizeLinear(L.out_proj, spec, bits, site(layer, ActivationSite::kOutProjInput), p + "out_proj",
                                      moment(layer, ActivationSite::kOutProjInput)));
    if (spec.scope_full) {
      L.quantize_conv_input = true;
      L.quantize_output_product = true;
      L.state_scale_per_channel = spec.state_scale_per_channel;
      L.conv_weight_scale = QuantizeConvWeight(L.conv_weight, w.E(), w.K());
    }
  }
  if (spec.quantize_lm_head) {
    MQ_RETURN_IF_ERROR(QuantizeLinear(w.lm_head, spec, spec.weight_bits, site(static_cast<int>(w.layers.size()), ActivationSite::kFinalNorm),
                                      "lm_head"));
  }
  return OkStatus();
}

}  // namespace mq::quant
