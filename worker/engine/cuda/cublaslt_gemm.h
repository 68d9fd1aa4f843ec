// cuBLASLt GEMMs of the engine, all in the "linear layer" form C[tokens, out] = X[tokens, k]·W[out, k]ᵀ
// with row-major X, W and C (cuBLASLt sees the TN column-major product Cᵀ = W·Xᵀ):
//   INT8 × INT8 → INT32 (IMMA tensor cores), exact; dequantization is fused into the consumer;
//   FP16 × FP16 → FP16 or FP32 with FP32 accumulation.
// One handle and one workspace per instance; plans (descriptors, layouts, the heuristic's algo)
// are cached per shape, so steady-state calls allocate nothing and can be captured in graphs.
#pragma once

#include <cublasLt.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <map>
#include <memory>
#include <tuple>

#include "cuda/device_buffer.h"
#include "util/status.h"

namespace mq::cuda {

class CublasLtGemm {
 public:
  static StatusOr<std::unique_ptr<CublasLtGemm>> Create(size_t workspace_bytes = 32ull << 20);
  ~CublasLtGemm();
  CublasLtGemm(const CublasLtGemm&) = delete;
  CublasLtGemm& operator=(const CublasLtGemm&) = delete;

  // acc[t, o] = Σ_k x[t, k]·w[o, k]. k, ldw, ldx multiples of 4 (the engine pads to 16).
  Status Int8(const int8_t* w, int64_t ldw, const int8_t* x, int64_t ldx, int32_t* acc, int64_t ldc, int64_t out,
              int64_t tokens, int64_t k, cudaStream_t stream);
  // c[t, o] = Σ_k x[t, k]·w[o, k] in FP32 accumulation; c is half, or float when c_f32.
  Status F16(const __half* w, int64_t ldw, const __half* x, int64_t ldx, void* c, bool c_f32, int64_t ldc,
             int64_t out, int64_t tokens, int64_t k, cudaStream_t stream);

 private:
  struct Plan;
  using Key = std::tuple<int, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
  CublasLtGemm() = default;
  StatusOr<Plan*> GetPlan(int kind, int64_t out, int64_t tokens, int64_t k, int64_t ldw, int64_t ldx, int64_t ldc);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer<uint8_t> workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
};

}  // namespace mq::cuda
