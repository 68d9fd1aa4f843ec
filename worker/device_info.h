// What a worker advertises about its device: a name and memory in bytes.
#pragma once

#include <cstdint>
#include <string>

namespace mq::worker {

struct DeviceInfo {
  std::string name;
  uint64_t memory_bytes = 0;
};

// cpu: the CPU model from /proc/cpuinfo and MemTotal. cuda: the first GPU as nvidia-smi reports
// it (empty name when nvidia-smi is unavailable).
DeviceInfo DetectDevice(const std::string& backend);
// Whether a CUDA device appears to be present (nvidia-smi lists one).
bool CudaDevicePresent();

}  // namespace mq::worker
