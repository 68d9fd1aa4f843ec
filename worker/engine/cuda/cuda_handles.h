// RAII owners of CUDA streams, events and executable graphs.
#pragma once

#include <cuda_runtime_api.h>

#include <utility>

#include "cuda/cuda_check.h"
#include "util/status.h"

namespace mq::cuda {

class CudaStream {
 public:
  CudaStream() = default;
  ~CudaStream() { if (s_ != nullptr) cudaStreamDestroy(s_); }
  CudaStream(CudaStream&& o) noexcept : s_(std::exchange(o.s_, nullptr)) {}
  CudaStream& operator=(CudaStream&& o) noexcept { std::swap(s_, o.s_); return *this; }
  CudaStream(const CudaStream&) = delete;
  CudaStream& operator=(const CudaStream&) = delete;
  static StatusOr<CudaStream> Create() {
    CudaStream s;
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamCreateWithFlags(&s.s_, cudaStreamNonBlocking));
    return StatusOr<CudaStream>(std::move(s));
  }
  cudaStream_t get() const { return s_; }
  Status Synchronize() const { MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(s_)); return OkStatus(); }

 private:
  cudaStream_t s_ = nullptr;
};

class CudaEvent {
 public:
  CudaEvent() = default;
  ~CudaEvent() { if (e_ != nullptr) cudaEventDestroy(e_); }
  CudaEvent(CudaEvent&& o) noexcept : e_(std::exchange(o.e_, nullptr)) {}
  CudaEvent& operator=(CudaEvent&& o) noexcept { std::swap(e_, o.e_); return *this; }
  CudaEvent(const CudaEvent&) = delete;
  CudaEvent& operator=(const CudaEvent&) = delete;
  static StatusOr<CudaEvent> Create() {
    CudaEvent e;
    MQ_CUDA_RETURN_IF_ERROR(cudaEventCreate(&e.e_));
    return StatusOr<CudaEvent>(std::move(e));
  }
  cudaEvent_t get() const { return e_; }
  Status Record(cudaStream_t s) { MQ_CUDA_RETURN_IF_ERROR(cudaEventRecord(e_, s)); return OkStatus(); }

 private:
  cudaEvent_t e_ = nullptr;
};

// Milliseconds between two recorded events (synchronizes on `end`).
inline StatusOr<float> ElapsedMs(const CudaEvent& start, const CudaEvent& end) {
  MQ_CUDA_RETURN_IF_ERROR(cudaEventSynchronize(end.get()));
  float ms = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaEventElapsedTime(&ms, start.get(), end.get()));
  return ms;
}

class CudaGraphExec {
 public:
  CudaGraphExec() = default;
  ~CudaGraphExec() { Reset(); }
  CudaGraphExec(CudaGraphExec&& o) noexcept : g_(std::exchange(o.g_, nullptr)) {}
  CudaGraphExec& operator=(CudaGraphExec&& o) noexcept { std::swap(g_, o.g_); return *this; }
  CudaGraphExec(const CudaGraphExec&) = delete;
  CudaGraphExec& operator=(const CudaGraphExec&) = delete;
  // Takes ownership of `graph` (destroyed here once instantiated).
  static StatusOr<CudaGraphExec> Instantiate(cudaGraph_t graph) {
    CudaGraphExec e;
    const cudaError_t err = cudaGraphInstantiate(&e.g_, graph, 0);
    cudaGraphDestroy(graph);
    MQ_CUDA_RETURN_IF_ERROR(err);
    return StatusOr<CudaGraphExec>(std::move(e));
  }
  Status Launch(cudaStream_t s) const { MQ_CUDA_RETURN_IF_ERROR(cudaGraphLaunch(g_, s)); return OkStatus(); }
  bool valid() const { return g_ != nullptr; }
  void Reset() { if (g_ != nullptr) cudaGraphExecDestroy(g_); g_ = nullptr; }

 private:
  cudaGraphExec_t g_ = nullptr;
};

}  // namespace mq::cuda
