// Loads a device backend plugin (serve/backend_plugin.h; the CUDA one is libmq_cuda_backend.so)
// with dlopen. Why a plugin and not a link: see worker/CMakeLists.txt. No gRPC here, so tests
// load plugins without a server.
#pragma once

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "serve/backend_plugin.h"

namespace mq::worker {

inline constexpr char kCudaBackendPluginName[] = "libmq_cuda_backend.so";

// dlopen(RTLD_NOW | RTLD_LOCAL) + dlsym("mq_backend_plugin"), then checks the table: its ABI
// version equals this build's and every entry is set. NOT_FOUND when the file does not exist;
// FAILED_PRECONDITION with dlerror's text when it cannot be loaded (a CUDA library missing from
// the library path, say), with the symbol missing, or on an ABI mismatch. A loaded plugin stays
// loaded for the life of the process (the table points into it).
absl::StatusOr<const mq::serve::BackendPlugin*> LoadBackendPlugin(const std::string& path);

// Where the worker looks for the CUDA plugin when --backend-plugin is not given: next to the
// executable (/proc/self/exe's directory), then ../lib/ relative to it.
std::vector<std::string> DefaultBackendPluginPaths();

// The path to load: `flag` when set, else the first default path that exists, else the first
// default path (so that the error names where it was looked for).
std::string ResolveBackendPluginPath(const std::string& flag);

// LoadBackendPlugin, then probe: the plugin together with the device it found, or why not.
// UNAVAILABLE (the probe's message) when the plugin loads but finds no usable device.
absl::StatusOr<const mq::serve::BackendPlugin*> LoadAndProbeBackendPlugin(const std::string& path,
                                                                         mq::serve::DeviceDescription* device);

}  // namespace mq::worker
