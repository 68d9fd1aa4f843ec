#include "quant/quant_diagnostics.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "quant/calibration.h"

namespace mq::quant {
namespace {

double RelWeightError(const std::vector<float>& w, int64_t rows, int64_t cols, const QuantSpec& spec,
                      std::vector<float>* dequant = nullptr) {
  const LinearQuant q = QuantizeWeightRows(w, rows, cols, spec.weight_bits, spec.weight_clip);
  double num = 0, den = 0;
  if (dequant) dequant->resize(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) {
      const double v = static_cast<double>(q.qweight[r * cols + c]) * q.weight_scale[r];
      if (dequant) (*dequant)[r * cols + c] = static_cast<float>(v);
      num += (v - w[r * cols + c]) * (v - w[r * cols + c]);
      den += static_cast<double>(w[r * cols + c]) * w[r * cols + c];
    }
  return den > 0 ? std::sqrt(num / den) : 0.0;
}

// The float linear whose input `site` is, or null.
const Linear* LinearAt(const MambaLayerWeights& L, ActivationSite site) {
  switch (site) {
    case ActivationSite::kInProjInput: return &L.in_proj;
    case ActivationSite::kXProjInput: return &L.x_proj;
    case ActivationSite::kDtProjInput: return &L.dt_proj;
    case ActivationSite::kOutProjInput: return &L.out_proj;
    default: return nullptr;
  }
}

// Per-token INT8 error and channel spread of each observed linear input, and the error of the
// linear's output x·Wᵀ with both operands quantized and with the weight alone (what the next
// layer sees: a weight error along the input's small directions costs nothing, one along its
// large directions costs the most).
class ActivationErrorObserver : public ForwardObserver {
 public:
  ActivationErrorObserver(const MambaWeights& w, const QuantSpec& spec) : w_(w), spec_(spec) {}
  bool Wants(ActivationSite s) const override {
    return s == ActivationSite::kInProjInput || s == ActivationSite::kXProjInput || s == ActivationSite::kDtProjInput ||
           s == ActivationSite::kOutProjInput || (s == ActivationSite::kConvInput && conv_);
  }
  void Observe(int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) override {
    std::vector<float> v(x, x + rows * cols);
    const MambaLayerWeights& L = w_.layers[static_cast<size_t>(layer)];
    if (site == ActivationSite::kOutProjInput && L.out_proj.input_transform) L.out_proj.input_transform->ApplyRows(v.data(), rows);
    Acc& a = acc_[{layer, site}];
    a.sq.resize(static_cast<size_t>(cols), 0.0);
    std::vector<int8_t> q(static_cast<size_t>(cols));
    std::vector<float> xq(static_cast<size_t>(cols));
    const Linear* lin = LinearAt(L, site);
    const std::vector<float>* wq = lin != nullptr && !lin->weight.empty() ? &Dequantized(layer, site, *lin) : nullptr;
    for (int64_t r = 0; r < rows; ++r) {
      float s = 0;
      const float* xr = v.data() + r * cols;
      QuantizeRowsPerToken(xr, 1, cols, q.data(), &s);
      for (int64_t c = 0; c < cols; ++c) {
        xq[c] = q[c] * s;
        const double xv = xr[c], e = xq[c] - xv;
        a.num += e * e;
        a.den += xv * xv;
        a.sq[c] += xv * xv;
      }
      if (wq == nullptr) continue;
      for (int64_t o = 0; o < lin->out_features; ++o) {
        const float* wr = lin->weight.data() + o * cols;
        const float* qr = wq->data() + o * cols;
        float y = 0, yw = 0, yqq = 0;
        for (int64_t c = 0; c < cols; ++c) {
          y += xr[c] * wr[c];
          yw += xr[c] * qr[c];
          yqq += xq[c] * qr[c];
        }
        a.out_den += static_cast<double>(y) * y;
        a.out_num += static_cast<double>(yqq - y) * (yqq - y);
        a.out_w_num += static_cast<double>(yw - y) * (yw - y);
      }
    }
  }
  nlohmann::json Result() const {
    nlohmann::json out = nlohmann::json::array();
    for (const auto& [key, a] : acc_) {
      std::vector<double> rms = a.sq;
      std::sort(rms.begin(), rms.end());
      const double med = rms[rms.size() / 2], top = rms.back();
      out.push_back({{"layer", key.first}, {"site", ActivationSiteName(key.second)},
                     {"rel_error", a.den > 0 ? std::sqrt(a.num / a.den) : 0.0},
                     {"max_over_median_rms", med > 0 ? std::sqrt(top / med) : 0.0}});
      if (a.out_den > 0) {
        out.back()["output_error"] = std::sqrt(a.out_num / a.out_den);
        out.back()["output_error_weight_only"] = std::sqrt(a.out_w_num / a.out_den);
      }
    }
    return out;
  }
  bool conv_ = false;

 private:
  struct Acc {
    double num = 0, den = 0, out_num = 0, out_w_num = 0, out_den = 0;
    std::vector<double> sq;
  };
  const std::vector<float>& Dequantized(int layer, ActivationSite site, const Linear& lin) {
    std::vector<float>& d = dequant_[{layer, site}];
    if (d.empty()) RelWeightError(lin.weight, lin.out_features, lin.in_features, spec_, &d);
    return d;
  }
  const MambaWeights& w_;
  const QuantSpec& spec_;
  std::map<std::pair<int, ActivationSite>, Acc> acc_;
  std::map<std::pair<int, ActivationSite>, std::vector<float>> dequant_;
};

}  // namespace

nlohmann::json WeightQuantErrors(const MambaWeights& w, const QuantSpec& spec) {
  nlohmann::json out = nlohmann::json::array();
  const int64_t E = w.E(), R = w.R();
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const MambaLayerWeights& L = w.layers[i];
    std::vector<float> qxp, qdt;
    nlohmann::json row = {{"layer", i},
                          {"in_proj", RelWeightError(L.in_proj.weight, L.in_proj.out_features, L.in_proj.in_features, spec)},
                          {"x_proj", RelWeightError(L.x_proj.weight, L.x_proj.out_features, E, spec, &qxp)},
                          {"dt_proj", RelWeightError(L.dt_proj.weight, E, R, spec, &qdt)},
                          {"out_proj", RelWeightError(L.out_proj.weight, L.out_proj.out_features, E, spec)}};
    // dt path: P = W_dt [E, R] · W_xp[δ] [R, E], float vs both quantized.
    double num = 0, den = 0;
    for (int64_t a = 0; a < E; ++a)
      for (int64_t b = 0; b < E; ++b) {
        double p = 0, pq = 0;
        for (int64_t r = 0; r < R; ++r) {
          p += static_cast<double>(L.dt_proj.weight[a * R + r]) * L.x_proj.weight[r * E + b];
          pq += static_cast<double>(qdt[a * R + r]) * qxp[r * E + b];
        }
        num += (pq - p) * (pq - p);
        den += p * p;
      }
    row["dt_path"] = den > 0 ? std::sqrt(num / den) : 0.0;
    out.push_back(row);
  }
  return out;
}

StatusOr<nlohmann::json> ActivationQuantErrors(const MambaWeights& w, const QuantSpec& spec,
                                               const std::vector<int32_t>& tokens,
                                               const std::vector<int64_t>& starts, int64_t seq_len) {
  ActivationErrorObserver observer(w, spec);
  observer.conv_ = spec.scope_full;
  MQ_RETURN_IF_ERROR(ObserveWindows(w, tokens, starts, seq_len, &observer));
  return observer.Result();
}

}  // namespace mq::quant
