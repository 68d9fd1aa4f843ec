#include "quant/rotation_fusion.h"

#include <algorithm>

#include "cpu/parallel_for.h"

namespace mq::quant {

namespace {

// w[o, j] *= s[j] for w [rows, cols], rows chunked over the cores (2.8B-sized models scale 1e9
// weights this way).
void ScaleColumns(std::vector<float>& w, int64_t rows, int64_t cols, const float* s) {
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t o = r0; o < r1; ++o)
      for (int64_t j = 0; j < cols; ++j) w[o * cols + j] *= s[j];
  });
}

}  // namespace

void FoldNormWeights(MambaWeights& w) {
  const int64_t d = w.d();
  for (MambaLayerWeights& L : w.layers) {
    ScaleColumns(L.in_proj.weight, L.in_proj.out_features, d, L.norm.data());
    std::fill(L.norm.begin(), L.norm.end(), 1.0f);
  }
  // The LM head becomes its own tensor: after this the model is no longer tied.
  w.config.tie_word_embeddings = false;
  ScaleColumns(w.lm_head.weight, w.V(), d, w.norm_f.data());
  std::fill(w.norm_f.begin(), w.norm_f.end(), 1.0f);
}

Status ApplyResidualRotation(MambaWeights& w, const std::vector<double>& r1, QuantAccelerator& accel) {
  const int64_t d = w.d();
  MQ_RETURN_IF_ERROR(accel.MultiplyRight(w.embeddings, d, r1));
  MQ_RETURN_IF_ERROR(accel.MultiplyRight(w.lm_head.weight, d, r1));
  for (MambaLayerWeights& L : w.layers) {
    MQ_RETURN_IF_ERROR(accel.MultiplyRight(L.in_proj.weight, d, r1));
    // out_proj writes into the residual stream: its output rows rotate, W_out ← R1ᵀ·W_out.
    MQ_RETURN_IF_ERROR(accel.MultiplyLeftTransposed(L.out_proj.weight, L.out_proj.in_features, r1, 0, d));
    if (!L.out_proj.bias.empty()) MQ_RETURN_IF_ERROR(accel.MultiplyRight(L.out_proj.bias, d, r1));
  }
  return OkStatus();
}

Status ApplyDtRotation(MambaLayerWeights& L, int64_t R, const std::vector<double>& r5, QuantAccelerator& accel) {
  MQ_RETURN_IF_ERROR(accel.MultiplyLeftTransposed(L.x_proj.weight, L.x_proj.in_features, r5, 0, R));
  return accel.MultiplyRight(L.dt_proj.weight, R, r5);
}

void ApplyDtSmoothing(MambaLayerWeights& L, int64_t R, const std::vector<float>& s) {
  const int64_t E = L.x_proj.in_features;
  for (int64_t j = 0; j < R; ++j)
    for (int64_t k = 0; k < E; ++k) L.x_proj.weight[j * E + k] /= s[j];
  ScaleColumns(L.dt_proj.weight, L.dt_proj.out_features, R, s.data());
}

void ApplyConvInputSmoothing(MambaLayerWeights& L, const std::vector<float>& s) {
  const int64_t din = L.in_proj.in_features, K = static_cast<int64_t>(L.conv_weight.size() / s.size());
  for (size_t j = 0; j < s.size(); ++j) {
    for (int64_t k = 0; k < din; ++k) L.in_proj.weight[j * din + k] /= s[j];
    if (!L.in_proj.bias.empty()) L.in_proj.bias[j] /= s[j];
    for (int64_t k = 0; k < K; ++k) L.conv_weight[j * K + k] *= s[j];
  }
}

void ApplyOutProjSmoothRotation(MambaLayerWeights& L, const std::vector<float>& s,
                                std::shared_ptr<const HadamardRowTransform> r2) {
  const int64_t E = L.out_proj.in_features, d = L.out_proj.out_features;
  const int64_t din = L.in_proj.in_features;
  if (!s.empty()) {
    cpu::ParallelFor(E, 64, [&](int64_t j0, int64_t j1) {
      for (int64_t j = j0; j < j1; ++j) {
        float* zrow = L.in_proj.weight.data() + (E + j) * din;
        for (int64_t k = 0; k < din; ++k) zrow[k] /= s[j];
        if (!L.in_proj.bias.empty()) L.in_proj.bias[E + j] /= s[j];
      }
    });
    L.gate_scale = s;
    ScaleColumns(L.out_proj.weight, d, E, s.data());
  }
  if (r2) {
    // Each row of W_out times R2, in float64 like the dense products, chunked over the cores.
    const RandomHadamard& h = r2->hadamard();
    float* wo = L.out_proj.weight.data();
    cpu::ParallelFor(d, 16, [&](int64_t begin, int64_t end) {
      std::vector<double> rows(wo + begin * E, wo + end * E);
      h.ApplyRows(rows.data(), end - begin);
      std::copy(rows.begin(), rows.end(), wo + begin * E);
    });
    L.out_proj.input_transform = std::move(r2);
  }
}

Status ApplyStateSmoothRotation(MambaLayerWeights& L, int64_t R, int64_t N, const std::vector<float>& s,
                                const std::vector<double>& r4, QuantAccelerator& accel) {
  const int64_t E = L.x_proj.in_features;
  float* wx = L.x_proj.weight.data();
  if (!s.empty()) {
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < E; ++k) {
        wx[(R + n) * E + k] /= s[n];      // B rows: h' = h / s
        wx[(R + N + n) * E + k] *= s[n];  // C rows: C' = C · s
      }
  }
  if (!r4.empty()) {
    MQ_RETURN_IF_ERROR(accel.MultiplyLeftTransposed(L.x_proj.weight, E, r4, R + N, N));
    L.state_rotation.assign(r4.begin(), r4.end());
  }
  return OkStatus();
}

void ApplyNormSmoothing(MambaLayerWeights& L, const std::vector<float>& s) {
  const int64_t d = L.in_proj.in_features;
  for (int64_t j = 0; j < d; ++j) L.norm[j] /= s[j];
  ScaleColumns(L.in_proj.weight, L.in_proj.out_features, d, s.data());
}

}  // namespace mq::quant
