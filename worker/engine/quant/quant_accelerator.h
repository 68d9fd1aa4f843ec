// The numerically heavy steps of a quantization job behind one interface, so that the pipeline
// (quantize_pipeline.cc) is the same code on every device: the calibration forward and its
// statistics, the eigendecompositions of the KLT, the dense rotation products of the fusion, and
// the float-vs-quantized evaluation. CpuQuantAccelerator is the reference; the CUDA one
// (cuda/cuda_quant_accelerator.h) runs the same steps on a GPU.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "eval/perplexity.h"
#include "model/mamba_weights.h"
#include "quant/calibration.h"
#include "util/status.h"

namespace mq::quant {

struct QuantSpec;

class QuantAccelerator {
 public:
  virtual ~QuantAccelerator() = default;
  // "cpu", or "cuda (<device name>)": recorded in the job's report.
  virtual std::string name() const = 0;
  // OK when every step a job with this spec needs runs here; otherwise Unimplemented, saying which.
  virtual Status CheckSupported(const QuantSpec& spec) const = 0;

  // Runs the float model `w` over the windows (starts into `tokens`, seq_len each) and collects the
  // requested statistics (see Calibrate in calibration.h for their meaning).
  virtual StatusOr<CalibrationStats> Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                               const std::vector<int64_t>& starts, int64_t seq_len,
                                               const CalibrationRequest& request,
                                               const std::function<bool(int64_t, int64_t)>& progress) = 0;

  // Eigenvectors of the symmetric n×n float64 matrix `sigma` (row-major) as the columns of K,
  // by descending eigenvalue (KltBasis's contract). Checks the input, then runs Eigenvectors.
  StatusOr<std::vector<double>> SymmetricEigenvectors(const std::vector<double>& sigma, int64_t n,
                                                      std::vector<double>* eigenvalues);

  // w[row_begin:row_end, :] ← w[row_begin:row_end, :]·R for w [rows, n] row-major and R n×n,
  // computed in float64 (row_end < 0: all rows). Checks the shapes, then runs RightProduct.
  Status MultiplyRight(std::vector<float>& w, int64_t n, const std::vector<double>& r, int64_t row_begin = 0,
                       int64_t row_end = -1);
  // The n rows of width `cols` starting at row_begin ← Rᵀ·(those rows), in float64. Checks the
  // shapes, then runs LeftTransposedProduct.
  Status MultiplyLeftTransposed(std::vector<float>& w, int64_t cols, const std::vector<double>& r, int64_t row_begin,
                                int64_t n);

  // Perplexity of both models, top-1 agreement and KL(reference ‖ candidate), by the protocol of
  // CompareModels (eval/perplexity.h).
  virtual StatusOr<ComparisonResult> Compare(const MambaWeights& reference, const MambaWeights& candidate,
                                             const std::vector<int32_t>& tokens, int64_t window,
                                             const EvalProgress& progress) = 0;

  // Wall seconds spent so far in each step (e.g. "calibration_forward", "rotation_products"):
  // the job's report carries them, so a slow stage says where its time went.
  const std::map<std::string, double>& step_seconds() const { return step_seconds_; }

 protected:
  // The device's arithmetic behind the checked public calls (shapes valid, Σ finite, m ≥ 1).
  virtual StatusOr<std::vector<double>> Eigenvectors(const std::vector<double>& sigma, int64_t n,
                                                     std::vector<double>* eigenvalues) = 0;
  virtual Status RightProduct(float* rows, int64_t m, int64_t n, const std::vector<double>& r) = 0;  // [m, n]·R
  virtual Status LeftTransposedProduct(float* rows, int64_t n, int64_t cols, const std::vector<double>& r) = 0;

  // Adds the time from construction to destruction to step_seconds()[step].
  class StepTimer {
   public:
    StepTimer(QuantAccelerator* a, const char* step) : a_(a), step_(step), t0_(std::chrono::steady_clock::now()) {}
    ~StepTimer() {
      a_->step_seconds_[step_] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0_).count();
    }
    StepTimer(const StepTimer&) = delete;
    StepTimer& operator=(const StepTimer&) = delete;

   private:
    QuantAccelerator* a_;
    const char* step_;
    std::chrono::steady_clock::time_point t0_;
  };

 private:
  std::map<std::string, double> step_seconds_;
};

}  // namespace mq::quant
