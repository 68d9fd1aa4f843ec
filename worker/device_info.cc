#include "device_info.h"

#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"

namespace mq::worker {

DeviceInfo DetectHostDevice() {
  DeviceInfo info;
  std::ifstream cpuinfo("/proc/cpuinfo");
  std::string line;
  while (std::getline(cpuinfo, line)) {
    if (absl::StartsWith(line, "model name")) {
      auto pos = line.find(':');
      if (pos != std::string::npos) info.name = std::string(absl::StripAsciiWhitespace(line.substr(pos + 1)));
      break;
    }
  }
  std::ifstream meminfo("/proc/meminfo");
  while (std::getline(meminfo, line)) {
    if (absl::StartsWith(line, "MemTotal:")) {
      std::istringstream in(line.substr(9));
      uint64_t kib = 0;
      in >> kib;
      info.memory_bytes = kib << 10;
      break;
    }
  }
  return info;
}

}  // namespace mq::worker
