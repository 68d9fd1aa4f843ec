#include "model/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/blas.h"

namespace mq {

LinearQuant QuantizeWeightRows(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                               float clip_ratio) {
  LinearQuant q;
  q.weight_bits = bits;
  const float qmax = bits == 4 ? 7.0f : 127.0f;
  q.qweight.resize(static_cast<size_t>(rows * cols));
  q.weight_scale.resize(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = w.data() + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    amax *= clip_ratio;
    const float s = amax > 0.0f ? amax / qmax : 1.0f;
    q.weight_scale[r] = s;
    int8_t* out = q.qweight.data() + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::nearbyint(row[c] / s);
      out[c] = static_cast<int8_t>(std::clamp(v, -qmax, qmax));
    }
  }
  return q;
}

void QuantizeRowsPerToken(const float* x, int64_t rows, int64_t cols, int8_t* q, float* scales) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* row = x + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
    const float s = amax > 0.0f ? amax / 127.0f : 1.0f;
    scales[r] = s;
    const float inv = 1.0f / s;
    int8_t* out = q + r * cols;
    for (int64_t c = 0; c < cols; ++c) {
      const float v = std::nearbyint(row[c] * inv);
      out[c] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
    }
  }
}

void QuantizeRowsStatic(const float* x, int64_t rows, int64_t cols, float scale, int8_t* q) {
  const float inv = 1.0f / scale;
  for (int64_t i = 0; i < rows * cols; ++i) {
    const float v = std::nearbyint(x[i] * inv);
    q[i] = static_cast<int8_t>(std::clamp(v, -127.0f, 127.0f));
  }
}

void Int8MatMulTransposedB(const int8_t* qx, const int8_t* qw, int32_t* acc, int64_t rows, int64_t in,
                           int64_t out) {
  // Blocked over output channels so a block of weight rows stays in cache across tokens; the inner
  // loop is a plain int8·int8→int32 dot that the compiler vectorizes (vpmaddwd).
  constexpr int64_t kBlock = 64;
  for (int64_t o0 = 0; o0 < out; o0 += kBlock) {
    const int64_t o1 = std::min(out, o0 + kBlock);
    for (int64_t r = 0; r < rows; ++r) {
      const int8_t* xr = qx + r * in;
      for (int64_t o = o0; o < o1; ++o) {
        const int8_t* wr = qw + o * in;
        int32_t sum = 0;
        for (int64_t k = 0; k < in; ++k) sum += static_cast<int32_t>(xr[k]) * static_cast<int32_t>(wr[k]);
        acc[r * out + o] = sum;
      }
    }
  }
}

void Linear::Forward(const float* x, int64_t rows, float* y) const {
  std::vector<float> rotated;
  if (input_transform) {
    rotated.assign(x, x + rows * in_features);
    input_transform->ApplyRows(rotated.data(), rows);
    x = rotated.data();
  }
  if (!quant) {
    cpu::MatMulTransposedB(x, weight.data(), y, rows, in_features, out_features);
  } else {
    const LinearQuant& q = *quant;
    std::vector<int8_t> qx(static_cast<size_t>(rows * in_features));
    std::vector<float> sx(static_cast<size_t>(rows));
    if (q.act_mode == ActScaleMode::kPerToken) {
      QuantizeRowsPerToken(x, rows, in_features, qx.data(), sx.data());
    } else {
      QuantizeRowsStatic(x, rows, in_features, q.act_scale, qx.data());
      std::fill(sx.begin(), sx.end(), q.act_scale);
    }
    std::vector<int32_t> acc(static_cast<size_t>(rows * out_features));
    Int8MatMulTransposedB(qx.data(), q.qweight.data(), acc.data(), rows, in_features, out_features);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out_features; ++o)
        y[r * out_features + o] = static_cast<float>(acc[r * out_features + o]) * sx[r] * q.weight_scale[o];
  }
  if (!bias.empty()) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out_features; ++o) y[r * out_features + o] += bias[o];
  }
}

}  // namespace mq
