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

StatusOr<std::vector<double>> CpuQuantAccelerator::Eigenvectors(const std::vector<double>& sigma, int64_t n,
                                                                std::vector<double>* eigenvalues) {
  return KltBasis(sigma, n, eigenvalues);
}

Status CpuQuantAccelerator::RightProduct(float* rows, int64_t m, int64_t n, const std::vector<double>& r) {
  std::vector<double> a(rows, rows + m * n);
  std::vector<double> c(static_cast<size_t>(m * n));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n), static_cast<int>(n),
              1.0, a.data(), static_cast<int>(n), r.data(), static_cast<int>(n), 0.0, c.data(), static_cast<int>(n));
  for (int64_t i = 0; i < m * n; ++i) rows[i] = static_cast<float>(c[i]);
  return OkStatus();
}

Status CpuQuantAccelerator::LeftTransposedProduct(float* rows, int64_t n, int64_t cols, const std::vector<double>& r) {
  std::vector<double> b(rows, rows + n * cols);
  std::vector<double> c(static_cast<size_t>(n * cols));
  cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(n), static_cast<int>(cols), static_cast<int>(n),
              1.0, r.data(), static_cast<int>(n), b.data(), static_cast<int>(cols), 0.0, c.data(),
              static_cast<int>(cols));
  for (int64_t i = 0; i < n * cols; ++i) rows[i] = static_cast<float>(c[i]);
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
