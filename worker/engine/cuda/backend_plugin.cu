// libmq_cuda_backend.so: the CUDA backend as a plugin (serve/backend_plugin.h). The worker loads it
// with dlopen (worker/backend_plugin_loader.h) so that the CUDA libraries' TLS is allocated
// dynamically and does not raise the process's minimum thread stack (worker/CMakeLists.txt).
// Built from this file and mq_engine_cuda (+ mq_engine); a version script exports mq_backend_plugin
// alone (worker/engine/cuda/backend_plugin.map), so the plugin's copy of the engine never
// interposes on the worker's.
#include <cuda_runtime_api.h>

#include <memory>
#include <string>

#include "cuda/cuda_check.h"
#include "cuda/cuda_quant_accelerator.h"
#include "cuda/cuda_sequence_backend.h"
#include "cuda/cuda_vim_classifier.h"
#include "quant/quant_spec.h"
#include "quant/quantize_pipeline.h"
#include "serve/backend_plugin.h"

#ifndef MQ_CUDA_ARCHS
#define MQ_CUDA_ARCHS "unknown"
#endif

namespace mq::cuda {
namespace {

__global__ void ProbeKernel(int* out) { *out = 0x6d71; }

std::string CudaErrorText(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

// Device 0: a context is created and a kernel of this build runs on it (a device of another
// architecture than the build's has no kernel image: caught here, not at the first request).
Status ProbeDevice(serve::DeviceDescription* out) {
  int n = 0;
  cudaError_t e = cudaGetDeviceCount(&n);
  if (e != cudaSuccess)
    return UnavailableError("no usable CUDA device: cudaGetDeviceCount: " + CudaErrorText(e) +
                            (e == cudaErrorInsufficientDriver || e == cudaErrorNoDevice
                                 ? "; is an NVIDIA GPU present with its driver loaded?"
                                 : ""));
  if (n < 1) return UnavailableError("no CUDA device is present");
  if ((e = cudaSetDevice(0)) != cudaSuccess) return UnavailableError("cudaSetDevice(0): " + CudaErrorText(e));
  if ((e = cudaFree(nullptr)) != cudaSuccess)
    return UnavailableError("cannot create a CUDA context on device 0: " + CudaErrorText(e));
  cudaDeviceProp prop{};
  if ((e = cudaGetDeviceProperties(&prop, 0)) != cudaSuccess)
    return UnavailableError("cudaGetDeviceProperties: " + CudaErrorText(e));
  int* flag = nullptr;
  if ((e = cudaMalloc(&flag, sizeof(int))) != cudaSuccess) return UnavailableError("cudaMalloc: " + CudaErrorText(e));
  ProbeKernel<<<1, 1>>>(flag);
  e = cudaGetLastError();
  int value = 0;
  if (e == cudaSuccess) e = cudaMemcpy(&value, flag, sizeof(int), cudaMemcpyDeviceToHost);
  cudaFree(flag);
  const std::string arch = std::to_string(prop.major) + std::to_string(prop.minor);
  if (e != cudaSuccess || value != 0x6d71)
    return UnavailableError(std::string("a kernel of this build does not run on ") + prop.name + " (sm_" + arch +
                            "; the plugin was built for CUDA architectures " MQ_CUDA_ARCHS "): " + CudaErrorText(e));
  size_t free_bytes = 0, total_bytes = 0;
  if ((e = cudaMemGetInfo(&free_bytes, &total_bytes)) != cudaSuccess)
    return UnavailableError("cudaMemGetInfo: " + CudaErrorText(e));
  out->device = "cuda";
  out->name = prop.name;
  out->total_bytes = total_bytes;
  out->free_bytes = free_bytes;
  return OkStatus();
}

Status Probe(serve::DeviceDescription* out) {
  const Status s = ProbeDevice(out);
  if (!s.ok()) cudaGetLastError();  // leave no stale error for the thread's next launch check
  return s;
}

StatusOr<std::unique_ptr<serve::SequenceBackend>> OpenModel(const std::string& model_dir,
                                                            const serve::SequenceBackendOptions& options) {
  MQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));  // the device Probe chose, for the calling thread
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<CudaSequenceBackend> b, CudaSequenceBackend::Open(model_dir, options));
  return std::unique_ptr<serve::SequenceBackend>(std::move(b));
}

// quant::OpenQuantDevice's "auto" on the GPU side: the accelerator when it runs every step of the
// job, else null with the reason (the caller runs the job on the CPU and says why).
StatusOr<std::unique_ptr<quant::QuantAccelerator>> OpenQuant(const quant::QuantizeOptions& options,
                                                             std::string* why_not) {
  std::string reason;
  if (cudaSetDevice(0) == cudaSuccess) {
    auto gpu = CudaQuantAccelerator::Create();
    if (gpu.ok()) {
      MQ_ASSIGN_OR_RETURN(quant::QuantSpec spec, quant::QuantSpec::FromOptions(options));
      const Status supported = (*gpu)->CheckSupported(spec);
      if (supported.ok()) return std::unique_ptr<quant::QuantAccelerator>(std::move(*gpu));
      reason = supported.message();
    } else {
      reason = gpu.status().message();
    }
  } else {
    reason = "no usable CUDA device";
  }
  if (why_not != nullptr) *why_not = reason;
  return std::unique_ptr<quant::QuantAccelerator>();
}

uint64_t DeviceMemoryUsed() {
  size_t free_bytes = 0, total_bytes = 0;
  if (cudaMemGetInfo(&free_bytes, &total_bytes) != cudaSuccess) return 0;
  return static_cast<uint64_t>(total_bytes - free_bytes);
}

// The CUDA Vim classifier with its default options (FP32 linears for a float model, the export's
// INT8 for a quantized one; 256 images a call).
StatusOr<std::unique_ptr<ImageClassifier>> OpenClassifier(const std::string& model_dir) {
  MQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  return OpenCudaVimClassifier(model_dir);
}

const serve::BackendPlugin kPlugin{serve::kBackendPluginAbiVersion, &Probe, &OpenModel, &OpenQuant, &DeviceMemoryUsed,
                                   &OpenClassifier};

}  // namespace
}  // namespace mq::cuda

extern "C" __attribute__((visibility("default"))) const mq::serve::BackendPlugin* mq_backend_plugin() {
  return &mq::cuda::kPlugin;
}
