// QuantAccelerator on one GPU: the calibration forward is the FP16 CudaMambaModel with an
// activation tap (per-channel max/sum by a kernel, second moments by cuBLAS DSYRK in float64),
// eigendecompositions by cuSOLVER (DSYEVD), the rotation products by DGEMM on the FP64 tensor
// cores, and the evaluation as two CudaMambaModels whose logits are compared row by row on the GPU.
// Scope `full` takes the state's per-index maxima from the scan and C through the tap. Jobs it
// cannot run (static activation scales, a quantized LM head, per-step state scales) are refused by
// CheckSupported so that "auto" can fall back to the CPU.
#pragma once

#include <cublas_v2.h>
#include <cusolverDn.h>

#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_handles.h"
#include "cuda/device_buffer.h"
#include "quant/quant_accelerator.h"

namespace mq::cuda {

class CudaQuantAccelerator : public quant::QuantAccelerator {
 public:
  // Unavailable when no CUDA device can be used.
  static StatusOr<std::unique_ptr<CudaQuantAccelerator>> Create();
  ~CudaQuantAccelerator() override;

  std::string name() const override { return name_; }
  Status CheckSupported(const quant::QuantSpec& spec) const override;
  StatusOr<quant::CalibrationStats> Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                              const std::vector<int64_t>& starts, int64_t seq_len,
                                              const quant::CalibrationRequest& request,
                                              const std::function<bool(int64_t, int64_t)>& progress) override;
  StatusOr<ComparisonResult> Compare(const MambaWeights& reference, const MambaWeights& candidate,
                                     const std::vector<int32_t>& tokens, int64_t window,
                                     const EvalProgress& progress) override;

 protected:
  StatusOr<std::vector<double>> Eigenvectors(const std::vector<double>& sigma, int64_t n,
                                             std::vector<double>* eigenvalues) override;
  Status RightProduct(float* rows, int64_t m, int64_t n, const std::vector<double>& r) override;
  Status LeftTransposedProduct(float* rows, int64_t n, int64_t cols, const std::vector<double>& r) override;

 private:
  CudaQuantAccelerator() = default;
  // Makes r (n×n) resident in r_dev_; the fusion multiplies many weights by the same R1.
  Status UploadRotation(const std::vector<double>& r);
  template <typename T>
  static Status Reserve(DeviceBuffer<T>* b, size_t n);

  std::string name_;
  CudaStream stream_;
  cublasHandle_t cublas_ = nullptr;
  cusolverDnHandle_t solver_ = nullptr;
  std::vector<double> r_host_;  // the rotation held in r_dev_
  DeviceBuffer<double> r_dev_, a_, c_;
  DeviceBuffer<float> f_;
};

}  // namespace mq::cuda
