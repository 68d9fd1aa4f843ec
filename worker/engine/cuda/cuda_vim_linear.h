// A linear layer of the CUDA Vim classifier, y[t] = x[t]·Wᵀ + b on float32 activations, run in
// one of three ways:
//   kF32  cuBLAS SGEMM, FP32 math (no TF32): the exact-check path of a float model;
//   kF16  activations cast to half, FP16 weights, FP32 accumulation and output (cuBLASLt);
//   kInt8 the quantized export's INT8 weights with per-row scales (model/linear.h LinearQuant):
//         per-token or static INT8 activations (after the online Hadamard when the layer has
//         one, cuda/hadamard_kernel.cu), exact int32 IMMA GEMM (cuBLASLt), dequantized as
//         acc·s_x·s_w + b: the CPU's Linear::Forward, code for code on the same input.
#pragma once

#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <memory>

#include "cuda/cublaslt_gemm.h"
#include "cuda/device_buffer.h"
#include "model/linear.h"
#include "util/status.h"

namespace mq::cuda::vim {

enum class LinearMode { kF32, kF16, kInt8 };
const char* LinearModeName(LinearMode m);

// The GEMM handles of one classifier (one stream at a time).
class VimGemms {
 public:
  static StatusOr<std::unique_ptr<VimGemms>> Create();
  ~VimGemms();
  VimGemms(const VimGemms&) = delete;
  VimGemms& operator=(const VimGemms&) = delete;
  cublasHandle_t blas() const { return blas_; }
  CublasLtGemm& lt() { return *lt_; }

 private:
  VimGemms() = default;
  cublasHandle_t blas_ = nullptr;
  std::unique_ptr<CublasLtGemm> lt_;
};

// Scratch shared by every linear of a classifier, sized by Reserve for the largest one.
struct LinearScratch {
  DeviceBuffer<__half> x16;   // [tokens, ld_in]
  DeviceBuffer<int8_t> x8;    // [tokens, ld_in]
  DeviceBuffer<float> sx;     // [tokens]
  DeviceBuffer<int32_t> acc;  // [tokens, out_pad]
  DeviceBuffer<float> xt;     // [tokens, in]: a strided input made contiguous for the Hadamard
};

class CudaVimLinear {
 public:
  // kInt8 when `src` is quantized (float_mode is then ignored), else float_mode (kF32 or kF16).
  // Online transforms other than a Hadamard are Unimplemented.
  static StatusOr<CudaVimLinear> Upload(const Linear& src, LinearMode float_mode, const std::string& name);

  // y[t, 0..out) (rows ld_y apart) for `tokens` rows of x (rows ld_x apart, in ≤ ld_x). Without
  // add_bias the consumer adds the bias (dt_proj's, in the scan: the same single rounding).
  Status Forward(const float* x, int64_t ld_x, int64_t tokens, float* y, int64_t ld_y, VimGemms& g,
                 LinearScratch& s, cudaStream_t stream, bool add_bias = true) const;
  // Grows `s` so that Forward of `tokens` rows fits.
  Status Reserve(int64_t tokens, LinearScratch* s) const;

  LinearMode mode() const { return mode_; }
  int64_t in() const { return in_; }
  int64_t out() const { return out_; }
  uint64_t bytes() const;

 private:
  LinearMode mode_ = LinearMode::kF32;
  int64_t in_ = 0, out_ = 0;
  int64_t ld_in_ = 0;   // in padded to 16 (kF16, kInt8)
  int64_t out_pad_ = 0; // out padded to 4 (kInt8: cuBLASLt's IMMA needs it)
  DeviceBuffer<float> w32, bias;
  DeviceBuffer<__half> w16;
  DeviceBuffer<int8_t> w8;
  DeviceBuffer<float> wscale;     // [out_pad]
  float act_static_scale = 0.0f;  // > 0: per-tensor static activation scale
  // Online Hadamard before quantization (kInt8), as cuda/hadamard_kernel.cu takes it.
  DeviceBuffer<float> had_scale;
  DeviceBuffer<int8_t> had_mix;
  int had_m = 1;
  int64_t had_p = 1;
};

}  // namespace mq::cuda::vim
