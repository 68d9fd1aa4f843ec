#include "quant/quant_accelerator.h"

#include <cmath>

namespace mq::quant {

StatusOr<std::vector<double>> QuantAccelerator::SymmetricEigenvectors(const std::vector<double>& sigma, int64_t n,
                                                                      std::vector<double>* eigenvalues) {
  if (n <= 0 || static_cast<int64_t>(sigma.size()) != n * n) return InvalidArgumentError("KLT: covariance must be n×n");
  for (double v : sigma)
    if (!std::isfinite(v)) return InvalidArgumentError("KLT: covariance holds NaN or Inf");
  StepTimer timer(this, "eigendecompositions");
  return Eigenvectors(sigma, n, eigenvalues);
}

Status QuantAccelerator::MultiplyRight(std::vector<float>& w, int64_t n, const std::vector<double>& r,
                                       int64_t row_begin, int64_t row_end) {
  if (n <= 0 || static_cast<int64_t>(r.size()) != n * n || static_cast<int64_t>(w.size()) % n != 0)
    return InvalidArgumentError("MultiplyRight: shapes do not match");
  const int64_t rows = static_cast<int64_t>(w.size()) / n;
  if (row_end < 0) row_end = rows;
  if (row_begin < 0 || row_end > rows || row_begin > row_end) return InvalidArgumentError("MultiplyRight: bad row range");
  if (row_end == row_begin) return OkStatus();
  StepTimer timer(this, "rotation_products");
  return RightProduct(w.data() + row_begin * n, row_end - row_begin, n, r);
}

Status QuantAccelerator::MultiplyLeftTransposed(std::vector<float>& w, int64_t cols, const std::vector<double>& r,
                                                int64_t row_begin, int64_t n) {
  if (n <= 0 || cols <= 0 || static_cast<int64_t>(r.size()) != n * n || row_begin < 0 ||
      (row_begin + n) * cols > static_cast<int64_t>(w.size()))
    return InvalidArgumentError("MultiplyLeftTransposed: shapes do not match");
  StepTimer timer(this, "rotation_products");
  return LeftTransposedProduct(w.data() + row_begin * cols, n, cols, r);
}

}  // namespace mq::quant
