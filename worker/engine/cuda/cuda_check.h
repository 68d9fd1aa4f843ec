// Every CUDA runtime, cuBLAS(Lt) and cuSOLVER status becomes an mq::Status; nothing here throws.
//   MQ_CUDA_RETURN_IF_ERROR(cudaMalloc(...));
//   MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(...));
//   MQ_CUDA_RETURN_IF_ERROR(cudaGetLastError());   // after every launch (see MQ_CUDA_CHECK_LAUNCH)
#pragma once

#include <cublasLt.h>
#include <cuda_runtime_api.h>
#include <cusolver_common.h>

#include <string>

#include "util/status.h"

namespace mq::cuda {

inline Status CudaStatus(cudaError_t e, const char* what, const char* file, int line) {
  if (e == cudaSuccess) return OkStatus();
  const StatusCode code = (e == cudaErrorMemoryAllocation) ? StatusCode::kResourceExhausted
                          : (e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver) ? StatusCode::kUnavailable
                                                                                          : StatusCode::kInternal;
  return Status(code, std::string("CUDA error ") + cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ") in " +
                          what + " at " + file + ":" + std::to_string(line));
}

inline Status CublasStatus(cublasStatus_t s, const char* what, const char* file, int line) {
  if (s == CUBLAS_STATUS_SUCCESS) return OkStatus();
  const StatusCode code = s == CUBLAS_STATUS_ALLOC_FAILED    ? StatusCode::kResourceExhausted
                          : s == CUBLAS_STATUS_NOT_SUPPORTED ? StatusCode::kUnimplemented
                          : s == CUBLAS_STATUS_INVALID_VALUE ? StatusCode::kInvalidArgument
                                                             : StatusCode::kInternal;
  return Status(code, std::string("cuBLAS error ") + cublasLtGetStatusName(s) + " (" + cublasLtGetStatusString(s) +
                          ") in " + what + " at " + file + ":" + std::to_string(line));
}

inline Status CusolverStatus(cusolverStatus_t s, const char* what, const char* file, int line) {
  if (s == CUSOLVER_STATUS_SUCCESS) return OkStatus();
  const StatusCode code = s == CUSOLVER_STATUS_ALLOC_FAILED    ? StatusCode::kResourceExhausted
                          : s == CUSOLVER_STATUS_NOT_SUPPORTED ? StatusCode::kUnimplemented
                          : s == CUSOLVER_STATUS_INVALID_VALUE ? StatusCode::kInvalidArgument
                                                               : StatusCode::kInternal;
  return Status(code, std::string("cuSOLVER error ") + std::to_string(static_cast<int>(s)) + " in " + what + " at " +
                          file + ":" + std::to_string(line));
}

// True when a CUDA device is usable (tests skip otherwise).
inline bool DeviceAvailable() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

}  // namespace mq::cuda

#define MQ_CUDA_RETURN_IF_ERROR(expr)                                                       \
  do {                                                                                      \
    const cudaError_t mq_cuda_err_ = (expr);                                                \
    if (mq_cuda_err_ != cudaSuccess)                                                        \
      return ::mq::cuda::CudaStatus(mq_cuda_err_, #expr, __FILE__, __LINE__);               \
  } while (0)

#define MQ_CUBLAS_RETURN_IF_ERROR(expr)                                                     \
  do {                                                                                      \
    const cublasStatus_t mq_cublas_st_ = (expr);                                            \
    if (mq_cublas_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      return ::mq::cuda::CublasStatus(mq_cublas_st_, #expr, __FILE__, __LINE__);            \
  } while (0)

#define MQ_CUSOLVER_RETURN_IF_ERROR(expr)                                                   \
  do {                                                                                      \
    const cusolverStatus_t mq_cusolver_st_ = (expr);                                        \
    if (mq_cusolver_st_ != CUSOLVER_STATUS_SUCCESS)                                         \
      return ::mq::cuda::CusolverStatus(mq_cusolver_st_, #expr, __FILE__, __LINE__);       \
  } while (0)

// After a <<<...>>> launch: launch-configuration errors surface here.
#define MQ_CUDA_CHECK_LAUNCH(name) MQ_CUDA_RETURN_IF_ERROR((static_cast<void>(name), cudaGetLastError()))
