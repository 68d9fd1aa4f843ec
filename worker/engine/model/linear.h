// One linear layer y = x·Wᵀ (+ b) as the engine runs it: float32, or INT8 weights with
// per-output-channel scales and INT8 activations (exact int32 accumulation), optionally after
// an online rotation of its input.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <vector>

#include "model/row_transform.h"

namespace mq {

enum class ActScaleMode {
  kPerToken,        // dynamic: s_t = max|x_t| / 127, computed at run time
  kPerTensorStatic, // one calibrated scale for the site
};

struct LinearQuant {
  int weight_bits = 8;               // 8, or 4 (levels -7..7, one per int8 here; packed two per
                                     // byte in the export and on the GPU: model/int4_pack.h)
  std::vector<int8_t> qweight;       // [out, in]
  std::vector<float> weight_scale;   // [out]: w ≈ q · s
  ActScaleMode act_mode = ActScaleMode::kPerToken;
  float act_scale = 0.0f;            // kPerTensorStatic only
};

class Linear {
 public:
  int64_t in_features = 0;
  int64_t out_features = 0;
  std::vector<float> weight;  // [out, in]; kept in quantized models only when loaded from float
  std::vector<float> bias;    // [out] or empty
  std::optional<LinearQuant> quant;
  std::shared_ptr<const RowTransform> input_transform;  // online rotation, or null

  // y[rows, out] = transform(x)[rows, in] · Wᵀ + b. `x` is not modified.
  void Forward(const float* x, int64_t rows, float* y) const;
};

// How the range of each weight row is chosen.
enum class WeightClip {
  kMax,  // s = max|w_row| / qmax
  kMse,  // s = c·max|w_row| / qmax with c ∈ {1, 0.98, …, 0.5} minimizing the row's squared error
};

// Symmetric per-row quantization of a [rows, cols] matrix to `bits` (8 or 4).
LinearQuant QuantizeWeightRows(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                               WeightClip clip = WeightClip::kMax);

// Per-token INT8 quantization of activations: q[r, :] = round(x[r, :] / s_r), s_r = max|x_r| / 127.
void QuantizeRowsPerToken(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales);
// INT8 with one static scale for every row (values beyond ±127·s saturate).
void QuantizeRowsStatic(const float* x, int64_t rows, int64_t cols, float scale, int8_t* q);

// acc[rows, out] = Σ_k qx[r, k] · qw[o, k], exact int32.
void Int8MatMulTransposedB(const int8_t* qx, const int8_t* qw, int32_t* acc, int64_t rows, int64_t in,
                           int64_t out);

}  // namespace mq
