#include "quant/cpu_quant_accelerator.h"

#include <cblas.h>

#include "quant/klt.h"

namespace mq::quant {

StatusOr<CalibrationStats> CpuQuantAccelerator::Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                                          const std::vector<int64_t>& starts, int64_t seq_len,
                                                          const CalibrationRequest& request,
                                                          const std::function<bool(int64_t, int64_t)>& progress) {
  StepTimer timer(this, "calibration");
  return quant::Calibrate(w, tokens, starts, seq_len, request, progress);
}

StatusOr<std::vector<double>> CpuQuantAccelerator::SymmetricEigenvectors(const std::vector<double>& sigma, int64_t n,
                                                                         std::vector<double>* eigenvalues) {
  StepTimer timer(this, "eigendecompositions");
  return KltBasis(sigma, n, eigenvalues);
}

Status CpuQuantAccelerator::MultiplyRight(std::vector<float>& w, int64_t n, const std::vector<double>& r,
                                          int64_t row_begin, int64_t row_end) {
  if (n <= 0 || static_cast<int64_t>(r.size()) != n * n || static_cast<int64_t>(w.size()) % n != 0)
    return InvalidArgumentError("MultiplyRight: shapes do not match");
  const int64_t rows = static_cast<int64_t>(w.size()) / n;
  if (row_end < 0) row_end = rows;
  if (row_begin < 0 || row_end > rows || row_begin > row_end) return InvalidArgumentError("MultiplyRight: bad row range");
  const int64_t m = row_end - row_begin;
  if (m == 0) return OkStatus();
  StepTimer timer(this, "rotation_products");
  std::vector<double> a(w.begin() + row_begin * n, w.begin() + row_end * n);
  std::vector<double> c(static_cast<size_t>(m * n));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(n),
              1.0, a.data(), static_cast<int>(n), r.data(), static_cast<int>(n), 0.0, c.data(), static_cast<int>(n));
  for (int64_t i = 0; i < m * n; ++i) w[row_begin * n + i] = static_cast<float>(c[i]);
  return OkStatus();
}

Status CpuQuantAccelerator::MultiplyLeftTransposed(std::vector<float>& w, int64_t cols, const std::vector<double>& r,
                                                   int64_t row_begin, int64_t n) {
  if (n <= 0 || cols <= 0 || static_cast<int64_t>(r.size()) != n * n || row_begin < 0 ||
      (row_begin + n) * cols > static_cast<int64_t>(w.size()))
    return InvalidArgumentError("MultiplyLeftTransposed: shapes do not match");
  StepTimer timer(this, "rotation_products");
  std::vector<double> b(w.begin() + row_begin * cols, w.begin() + (row_begin + n) * cols);
  std::vector<double> c(static_cast<size_t>(n * cols));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(cols), static_cast<int>(n),
              1.0, r.data(), static_cast<int>(n), b.data(), static_cast<int>(cols), 0.0, c.data(),
              static_cast<int>(cols));
  for (int64_t i = 0; i < n * cols; ++i) w[row_begin * cols + i] = static_cast<float>(c[i]);
  return OkStatus();
}

StatusOr<ComparisonResult> CpuQuantAccelerator::Compare(const MambaWeights& reference, const MambaWeights& candidate,
                                                        const std::vector<int32_t>& tokens, int64_t window,
                                                        const EvalProgress& progress) {
  StepTimer timer(this, "evaluation");
  return CompareModels(reference, candidate, tokens, window, progress);
}

QuantAccelerator& CpuAccelerator() {
  static CpuQuantAccelerator* cpu = new CpuQuantAccelerator();  // never destroyed: used until exit
  return *cpu;
}

}  // namespace mq::quant
