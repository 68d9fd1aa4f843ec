#include "model/linear.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/blas.h"
#include "cpu/parallel_for.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace mq {

namespace {

// Squared error of quantizing `row` with scale s to ±qmax.
double RowQuantError(const float* row, int64_t cols, float s, float qmax) {
  double e = 0;
  for (int64_t c = 0; c < cols; ++c) {
    const float q = std::clamp(std::nearbyint(row[c] / s), -qmax, qmax);
    const double d = static_cast<double>(q * s) - row[c];
    e += d * d;
  }
  return e;
}

}  // namespace

LinearQuant QuantizeWeightRows(const std::vector<float>& w, int64_t rows, int64_t cols, int bits, WeightClip clip) {
  LinearQuant q;
  q.weight_bits = bits;
  const float qmax = bits == 4 ? 7.0f : 127.0f;
  q.qweight.resize(static_cast<size_t>(rows * cols));
  q.weight_scale.resize(static_cast<size_t>(rows));
  // Rows are independent: chunked over the cores (a 2.8B-parameter model has 2.7e9 weights).
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* row = w.data() + r * cols;
      float amax = 0.0f;
      for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(row[c]));
      float s = amax > 0.0f ? amax / qmax : 1.0f;
      if (clip == WeightClip::kMse && amax > 0.0f) {
        double best = RowQuantError(row, cols, s, qmax);
        for (int step = 1; step <= 25; ++step) {
          const float cand = (1.0f - 0.02f * static_cast<float>(step)) * amax / qmax;
          const double e = RowQuantError(row, cols, cand, qmax);
          if (e < best) {
            best = e;
            s = cand;
          }
        }
      }
      q.weight_scale[r] = s;
      int8_t* out = q.qweight.data() + r * cols;
      for (int64_t c = 0; c < cols; ++c) {
        const float v = std::nearbyint(row[c] / s);
        out[c] = static_cast<int8_t>(std::clamp(v, -qmax, qmax));
      }
    }
  });
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

namespace {

// One output channel's int8 dot product, exact in int32. The AVX2 path widens to int16 and uses
// vpmaddwd: each pair of products is at most 2·127·127 = 32258, so nothing saturates.
inline int32_t DotInt8(const int8_t* x, const int8_t* w, int64_t n) {
  int64_t k = 0;
  int32_t sum = 0;
#if defined(__AVX2__)
  __m256i acc = _mm256_setzero_si256();
  for (; k + 16 <= n; k += 16) {
    const __m256i xv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + k)));
    const __m256i wv = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k)));
    acc = _mm256_add_epi32(acc, _mm256_madd_epi16(xv, wv));
  }
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
  sum = _mm_cvtsi128_si32(s);
#endif
  for (; k < n; ++k) sum += static_cast<int32_t>(x[k]) * static_cast<int32_t>(w[k]);
  return sum;
}

}  // namespace

void Int8MatMulTransposedB(const int8_t* qx, const int8_t* qw, int32_t* acc, int64_t rows, int64_t in,
                           int64_t out) {
  // Threads split the output channels; within a thread a block of weight rows stays in cache
  // while every token passes over it.
  constexpr int64_t kBlock = 32;
  cpu::ParallelFor(out, kBlock, [&](int64_t begin, int64_t end) {
    for (int64_t o0 = begin; o0 < end; o0 += kBlock) {
      const int64_t o1 = std::min(end, o0 + kBlock);
      for (int64_t r = 0; r < rows; ++r) {
        const int8_t* xr = qx + r * in;
        for (int64_t o = o0; o < o1; ++o) acc[r * out + o] = DotInt8(xr, qw + o * in, in);
      }
    }
  });
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
