#include "vim/vim_metrics.h"

#include <algorithm>
#include <cmath>

namespace mq {
namespace {

// log softmax of one row, in double.
void LogSoftmax(const float* x, int64_t n, std::vector<double>& out) {
  out.resize(static_cast<size_t>(n));
  const double m = *std::max_element(x, x + n);
  double s = 0.0;
  for (int64_t i = 0; i < n; ++i) s += std::exp(static_cast<double>(x[i]) - m);
  const double lse = m + std::log(s);
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<double>(x[i]) - lse;
}

}  // namespace

std::vector<int64_t> TopClasses(const std::vector<float>& logits, int64_t classes) {
  const int64_t rows = classes > 0 ? static_cast<int64_t>(logits.size()) / classes : 0;
  std::vector<int64_t> top(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r) {
    const float* x = logits.data() + r * classes;
    top[r] = std::max_element(x, x + classes) - x;
  }
  return top;
}

double Accuracy(const std::vector<int64_t>& predicted, const std::vector<int64_t>& labels) {
  if (predicted.empty() || predicted.size() != labels.size()) return 0.0;
  int64_t correct = 0;
  for (size_t i = 0; i < labels.size(); ++i) correct += predicted[i] == labels[i];
  return static_cast<double>(correct) / static_cast<double>(labels.size());
}

LogitComparison CompareLogits(const std::vector<float>& ref, const std::vector<float>& cand, int64_t classes) {
  LogitComparison c;
  const int64_t rows = classes > 0 ? static_cast<int64_t>(ref.size()) / classes : 0;
  if (rows == 0 || ref.size() != cand.size()) return c;
  std::vector<double> lp, lq;
  int64_t agree = 0;
  double kl = 0.0;
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = ref.data() + r * classes;
    const float* b = cand.data() + r * classes;
    agree += (std::max_element(a, a + classes) - a) == (std::max_element(b, b + classes) - b);
    LogSoftmax(a, classes, lp);
    LogSoftmax(b, classes, lq);
    for (int64_t i = 0; i < classes; ++i) kl += std::exp(lp[i]) * (lp[i] - lq[i]);
  }
  c.top1_agreement = static_cast<double>(agree) / static_cast<double>(rows);
  c.mean_kl = kl / static_cast<double>(rows);
  return c;
}

}  // namespace mq
