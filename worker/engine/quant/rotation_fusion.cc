#include "quant/rotation_fusion.h"

#include <cblas.h>

namespace mq::quant {

void MultiplyRight(std::vector<float>& w, int64_t rows, int64_t n, const std::vector<double>& r, int64_t row_begin,
                   int64_t row_end) {
  if (row_end < 0) row_end = rows;
  const int64_t m = row_end - row_begin;
  if (m <= 0) return;
  std::vector<double> a(w.begin() + row_begin * n, w.begin() + row_end * n);
  std::vector<double> c(static_cast<size_t>(m * n));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(n),
              1.0, a.data(), static_cast<int>(n), r.data(), static_cast<int>(n), 0.0, c.data(), static_cast<int>(n));
  for (int64_t i = 0; i < m * n; ++i) w[row_begin * n + i] = static_cast<float>(c[i]);
}

void MultiplyLeftTransposed(std::vector<float>& w, int64_t cols, const std::vector<double>& r, int64_t row_begin,
                            int64_t n) {
  std::vector<double> b(w.begin() + row_begin * cols, w.begin() + (row_begin + n) * cols);
  std::vector<double> c(static_cast<size_t>(n * cols));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(cols), static_cast<int>(n),
              1.0, r.data(), static_cast<int>(n), b.data(), static_cast<int>(cols), 0.0, c.data(),
              static_cast<int>(cols));
  for (int64_t i = 0; i < n * cols; ++i) w[row_begin * cols + i] = static_cast<float>(c[i]);
}

void FoldNormWeights(MambaWeights& w) {
  const int64_t d = w.d();
  for (MambaLayerWeights& L : w.layers) {
    Linear& in = L.in_proj;
    for (int64_t o = 0; o < in.out_features; ++o)
      for (int64_t j = 0; j < d; ++j) in.weight[o * d + j] *= L.norm[j];
    std::fill(L.norm.begin(), L.norm.end(), 1.0f);
  }
  // The LM head becomes its own tensor: after this the model is no longer tied.
  w.config.tie_word_embeddings = false;
  for (int64_t v = 0; v < w.V(); ++v)
    for (int64_t j = 0; j < d; ++j) w.lm_head.weight[v * d + j] *= w.norm_f[j];
  std::fill(w.norm_f.begin(), w.norm_f.end(), 1.0f);
}

void ApplyResidualRotation(MambaWeights& w, const std::vector<double>& r1) {
  const int64_t d = w.d();
  MultiplyRight(w.embeddings, w.V(), d, r1);
  MultiplyRight(w.lm_head.weight, w.V(), d, r1);
  for (MambaLayerWeights& L : w.layers) {
    MultiplyRight(L.in_proj.weight, L.in_proj.out_features, d, r1);
    // out_proj writes into the residual stream: its output rows rotate, W_out ← R1ᵀ·W_out.
    MultiplyLeftTransposed(L.out_proj.weight, L.out_proj.in_features, r1, 0, d);
    if (!L.out_proj.bias.empty()) {
      std::vector<float> b = L.out_proj.bias;
      MultiplyRight(b, 1, d, r1);
      L.out_proj.bias = b;
    }
  }
}

void ApplyDtRotation(MambaLayerWeights& L, int64_t R, const std::vector<double>& r5) {
  MultiplyLeftTransposed(L.x_proj.weight, L.x_proj.in_features, r5, 0, R);
  MultiplyRight(L.dt_proj.weight, L.dt_proj.out_features, R, r5);
}

void ApplyOutProjSmoothRotation(MambaLayerWeights& L, const std::vector<float>& s,
                                std::shared_ptr<const RowTransform> r2, const std::vector<double>& r2_dense) {
  const int64_t E = L.out_proj.in_features, d = L.out_proj.out_features;
  const int64_t din = L.in_proj.in_features;
  if (!s.empty()) {
    for (int64_t j = 0; j < E; ++j) {
      float* zrow = L.in_proj.weight.data() + (E + j) * din;
      for (int64_t k = 0; k < din; ++k) zrow[k] /= s[j];
      if (!L.in_proj.bias.empty()) L.in_proj.bias[E + j] /= s[j];
    }
    L.gate_scale = s;
    for (int64_t o = 0; o < d; ++o)
      for (int64_t j = 0; j < E; ++j) L.out_proj.weight[o * E + j] *= s[j];
  }
  if (r2) {
    MultiplyRight(L.out_proj.weight, d, E, r2_dense);
    L.out_proj.input_transform = std::move(r2);
  }
}

void ApplyStateSmoothRotation(MambaLayerWeights& L, int64_t R, int64_t N, const std::vector<float>& s,
                              const std::vector<double>& r4) {
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
    MultiplyLeftTransposed(L.x_proj.weight, E, r4, R + N, N);
    L.state_rotation.assign(r4.begin(), r4.end());
  }
}

void ApplyNormSmoothing(MambaLayerWeights& L, const std::vector<float>& s) {
  const int64_t d = L.in_proj.in_features;
  for (int64_t j = 0; j < d; ++j) L.norm[j] /= s[j];
  for (int64_t o = 0; o < L.in_proj.out_features; ++o)
    for (int64_t j = 0; j < d; ++j) L.in_proj.weight[o * d + j] *= s[j];
}

}  // namespace mq::quant
