// Device memory owned by RAII types. Every allocation is counted so that tools can report the
// engine's own peak GPU memory (cuBLASLt workspace included; the CUDA context is not).
#pragma once

#include <cuda_runtime_api.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "util/status.h"

namespace mq::cuda {

struct DeviceMemoryStats {
  static std::atomic<int64_t>& current() { static std::atomic<int64_t> v{0}; return v; }
  static std::atomic<int64_t>& peak() { static std::atomic<int64_t> v{0}; return v; }
  static void Add(int64_t bytes) {
    const int64_t now = current().fetch_add(bytes) + bytes;
    int64_t p = peak().load();
    while (now > p && !peak().compare_exchange_weak(p, now)) {}
  }
  static void ResetPeak() { peak().store(current().load()); }
};

// A typed, move-only device allocation of `size` elements (cudaMalloc; never managed memory).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  ~DeviceBuffer() { Reset(); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(std::exchange(o.size_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    if (this != &o) {
      Reset();
      ptr_ = std::exchange(o.ptr_, nullptr);
      size_ = std::exchange(o.size_, 0);
    }
    return *this;
  }

  static StatusOr<DeviceBuffer> Allocate(size_t size) {
    DeviceBuffer b;
    if (size == 0) return StatusOr<DeviceBuffer>(std::move(b));
    void* p = nullptr;
    MQ_CUDA_RETURN_IF_ERROR(cudaMalloc(&p, size * sizeof(T)));
    b.ptr_ = static_cast<T*>(p);
    b.size_ = size;
    DeviceMemoryStats::Add(static_cast<int64_t>(size * sizeof(T)));
    return StatusOr<DeviceBuffer>(std::move(b));
  }
  static StatusOr<DeviceBuffer> FromHost(const T* data, size_t size) {
    MQ_ASSIGN_OR_RETURN(DeviceBuffer b, Allocate(size));
    if (size > 0) MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(b.ptr_, data, size * sizeof(T), cudaMemcpyHostToDevice));
    return StatusOr<DeviceBuffer>(std::move(b));
  }
  static StatusOr<DeviceBuffer> FromHost(const std::vector<T>& v) { return FromHost(v.data(), v.size()); }

  Status CopyToHost(T* out, size_t count) const {
    if (count > size_) return InvalidArgumentError("DeviceBuffer::CopyToHost: count exceeds size");
    if (count > 0) MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(out, ptr_, count * sizeof(T), cudaMemcpyDeviceToHost));
    return OkStatus();
  }
  StatusOr<std::vector<T>> ToHost() const {
    std::vector<T> v(size_);
    MQ_RETURN_IF_ERROR(CopyToHost(v.data(), size_));
    return v;
  }
  Status Zero(cudaStream_t stream = nullptr) {
    if (size_ > 0) MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(ptr_, 0, size_ * sizeof(T), stream));
    return OkStatus();
  }

  T* get() const { return ptr_; }
  size_t size() const { return size_; }
  size_t bytes() const { return size_ * sizeof(T); }
  bool empty() const { return size_ == 0; }

  void Reset() {
    if (ptr_ != nullptr) {
      cudaFree(ptr_);  // errors here are sticky-context errors that the next checked call reports
      DeviceMemoryStats::Add(-static_cast<int64_t>(size_ * sizeof(T)));
    }
    ptr_ = nullptr;
    size_ = 0;
  }

 private:
  T* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace mq::cuda
