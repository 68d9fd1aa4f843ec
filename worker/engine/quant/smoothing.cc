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

std::vector<float> ColumnAbsMax(const std::vector<float>& w, long rows, long cols, long row_begin, long row_end) {
  if (row_end < 0) row_end = rows;
  std::vector<float> m(static_cast<size_t>(cols), 0.0f);
  for (long r = row_begin; r < row_end; ++r)
    for (long c = 0; c < cols; ++c) m[c] = std::max(m[c], std::fabs(w[r * cols + c]));
  return m;
}

}  // namespace mq::quant
