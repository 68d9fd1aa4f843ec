// The reference QuantAccelerator: the CPU forward (cpu/mamba_forward.h) with float64 statistics,
// Eigen's SelfAdjointEigenSolver and OpenBLAS dgemm. Stateless; supports every job.
#pragma once

#include "quant/quant_accelerator.h"

namespace mq::quant {

class CpuQuantAccelerator : public QuantAccelerator {
 public:
  std::string name() const override { return "cpu"; }
  Status CheckSupported(const QuantSpec& spec) const override { return OkStatus(); }
  StatusOr<CalibrationStats> Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                       const std::vector<int64_t>& starts, int64_t seq_len,
                                       const CalibrationRequest& request,
                                       const std::function<bool(int64_t, int64_t)>& progress) override;
  StatusOr<ComparisonResult> Compare(const MambaWeights& reference, const MambaWeights& candidate,
                                     const std::vector<int32_t>& tokens, int64_t window,
                                     const EvalProgress& progress) override;

 protected:
  StatusOr<std::vector<double>> Eigenvectors(const std::vector<double>& sigma, int64_t n,
                                             std::vector<double>* eigenvalues) override;
  Status RightProduct(float* rows, int64_t m, int64_t n, const std::vector<double>& r) override;
  Status LeftTransposedProduct(float* rows, int64_t n, int64_t cols, const std::vector<double>& r) override;
};

// The process-wide CPU accelerator (it holds no state): the default of the pipeline and fusion.
QuantAccelerator& CpuAccelerator();

}  // namespace mq::quant
