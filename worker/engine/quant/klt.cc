#include "quant/klt.h"

#include <cmath>

#include <Eigen/Eigenvalues>

namespace mq::quant {

StatusOr<std::vector<double>> KltBasis(const std::vector<double>& sigma, int64_t n, std::vector<double>* eigenvalues) {
  if (n <= 0 || static_cast<int64_t>(sigma.size()) != n * n)
    return InvalidArgumentError("KLT: covariance must be n×n");
  for (double v : sigma)
    if (!std::isfinite(v)) return InvalidArgumentError("KLT: covariance holds NaN or Inf");
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(sigma.data(), n, n);
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> solver(m);
  if (solver.info() != Eigen::Success) return InternalError("KLT: eigendecomposition did not converge");
  // Eigen returns ascending eigenvalues; the order only permutes channels, descending reads better.
  std::vector<double> k(static_cast<size_t>(n * n));
  for (int64_t col = 0; col < n; ++col) {
    const int64_t src = n - 1 - col;
    for (int64_t row = 0; row < n; ++row) k[row * n + col] = solver.eigenvectors()(row, src);
  }
  if (eigenvalues != nullptr) {
    eigenvalues->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) (*eigenvalues)[i] = solver.eigenvalues()(n - 1 - i);
  }
  return k;
}

StatusOr<std::vector<double>> KltHadamardRotation(const std::vector<double>& sigma, int64_t n,
                                                  const RandomHadamard& hadamard, QuantAccelerator& accel) {
  if (hadamard.size() != n) return InvalidArgumentError("KLT: Hadamard size differs from the covariance size");
  MQ_ASSIGN_OR_RETURN(std::vector<double> k, accel.SymmetricEigenvectors(sigma, n, nullptr));
  hadamard.ApplyRows(k.data(), n);  // each row of K times H̃: K·H̃
  return k;
}

}  // namespace mq::quant
