// What a worker advertises about its device: a name and memory in bytes. For the GPU this comes
// from the CUDA backend plugin's probe (serve/backend_plugin.h); this file describes the host.
#pragma once

#include <cstdint>
#include <string>

namespace mq::worker {

struct DeviceInfo {
  std::string name;
  uint64_t memory_bytes = 0;
};

// The CPU model from /proc/cpuinfo and MemTotal.
DeviceInfo DetectHostDevice();

}  // namespace mq::worker
