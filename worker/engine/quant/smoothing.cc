#include "quant/smoothing.h"

#include <algorithm>
#include <cmath>

namespace mq::quant {

std::vector<float> SmoothingFactors(const std::vector<float>& act_absmax, const std::vector<float>& weight_col_absmax,
                                    double alpha, double min_scale) {
  std::vector<float> s(act_absmax.size(), 1.0f);
  for (size_t j = 0; j < s.size(); ++j) {
    const double a = act_absmax[j], w = weight_col_absmax[j];
    if (a <= 0.0 || w <= 0.0) continue;  // a dead channel: leave it alone
    s[j] = static_cast<float>(std::max(min_scale, std::pow(a, alpha) / std::pow(w, 1.0 - alpha)));
  }
  return s;
}

std::vector<float> ConvInputFactors(const std::vector<float>& w, long rows, long cols, const std::vector<double>& sigma) {
  std::vector<double> rms(static_cast<size_t>(rows), 0.0);
  std::vector<double> t(static_cast<size_t>(cols));
  double log_sum = 0.0;
  long live = 0;
  for (long r = 0; r < rows; ++r) {
    const float* wr = w.data() + r * cols;
    for (long i = 0; i < cols; ++i) {
      double acc = 0.0;
      for (long k = 0; k < cols; ++k) acc += sigma[i * cols + k] * wr[k];
      t[i] = acc;
    }
    double q = 0.0;
    for (long i = 0; i < cols; ++i) q += wr[i] * t[i];
    rms[r] = q > 0.0 ? std::sqrt(q) : 0.0;
    if (rms[r] > 0.0) {
      log_sum += std::log(rms[r]);
      ++live;
    }
  }
  std::vector<float> s(static_cast<size_t>(rows), 1.0f);
  if (live == 0) return s;
  const double level = std::exp(log_sum / static_cast<double>(live));
  for (long r = 0; r < rows; ++r)
    if (rms[r] > 0.0) s[r] = static_cast<float>(rms[r] / level);
  return s;
}

std::vector<float> ColumnAbsMax(const std::vector<float>& w, long rows, long cols, long row_begin, long row_end) {
  if (row_end < 0) row_end = rows;
  std::vector<float> m(static_cast<size_t>(cols), 0.0f);
  for (long r = row_begin; r < row_end; ++r)
    for (long c = 0; c < cols; ++c) m[c] = std::max(m[c], std::fabs(w[r * cols + c]));
  return m;
}

}  // namespace mq::quant
