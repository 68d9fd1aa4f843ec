// The entry point of a device backend built as a shared object (libmq_cuda_backend.so) and loaded
// with dlopen, as inference servers load their backends. Why a plugin: the CUDA libraries carry
// large static TLS (cuBLASLt alone 94 KB); linked into a process they raise glibc's minimum thread
// stack above the 100 KB that civetweb (the Prometheus endpoint) requests, and its threads cannot
// start. Loaded with dlopen, their TLS is allocated dynamically and every thread starts.
//
// The plugin is built from this very tree with the same compiler and standard library, so the
// table passes C++ types; abi_version guards against loading a plugin of another build.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "serve/sequence_backend.h"
#include "util/status.h"

namespace mq {
class ImageClassifier;
}  // namespace mq

namespace mq::quant {
class QuantAccelerator;
struct QuantizeOptions;
}  // namespace mq::quant

namespace mq::serve {

// Bumped whenever this table, SequenceBackend, QuantAccelerator, ImageClassifier or the types they
// pass change. 2: open_classifier. 3: SequenceBackendOptions::state_dtype.
inline constexpr int kBackendPluginAbiVersion = 3;

struct DeviceDescription {
  std::string device;  // "cuda"
  std::string name;    // e.g. "NVIDIA H100 80GB HBM3"
  uint64_t total_bytes = 0;
  uint64_t free_bytes = 0;
};

struct BackendPlugin {
  int abi_version = kBackendPluginAbiVersion;
  // Finds a usable device (a context can be created on it); an error says why not.
  Status (*probe)(DeviceDescription* out) = nullptr;
  // Loads a model directory (float or quantized export) onto the device with every buffer the
  // options ask for; RESOURCE_EXHAUSTED (saying how much) when they do not fit.
  StatusOr<std::unique_ptr<SequenceBackend>> (*open_model)(const std::string& model_dir,
                                                           const SequenceBackendOptions& options) = nullptr;
  // The quantization accelerator for a job ("auto" semantics of quant::OpenQuantDevice: the GPU
  // when it runs every step of the job, else null with *why_not filled).
  StatusOr<std::unique_ptr<quant::QuantAccelerator>> (*open_quant)(const quant::QuantizeOptions& options,
                                                                   std::string* why_not) = nullptr;
  // Device memory in use on the current device (bytes), for metrics and the unload check.
  uint64_t (*device_memory_used)() = nullptr;
  // Loads a Vision Mamba directory (`model_type: vim`, float or quantized export) onto the device
  // (vim/image_classifier.h); null in a plugin without image classification.
  StatusOr<std::unique_ptr<ImageClassifier>> (*open_classifier)(const std::string& model_dir) = nullptr;
};

}  // namespace mq::serve

// The one exported symbol of a backend plugin.
extern "C" const mq::serve::BackendPlugin* mq_backend_plugin();
