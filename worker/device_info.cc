#include "device_info.h"

#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"

namespace mq::worker {
namespace {

std::string RunCommand(const char* cmd) {
  std::string out;
  FILE* p = ::popen(cmd, "r");
  if (p == nullptr) return out;
  char buf[512];
  while (out.size() < 4096 && std::fgets(buf, sizeof buf, p) != nullptr) out += buf;
  ::pclose(p);
  return out;
}

}  // namespace

bool CudaDevicePresent() {
  return !RunCommand("nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null").empty();
}

DeviceInfo DetectDevice(const std::string& backend) {
  DeviceInfo info;
  if (backend == "cuda") {
    std::string line = RunCommand("nvidia-smi --query-gpu=name,memory.total --format=csv,noheader,nounits 2>/dev/null");
    line = line.substr(0, line.find('\n'));
    std::vector<std::string> parts = absl::StrSplit(line, ',');
    if (parts.size() == 2) {
      info.name = std::string(absl::StripAsciiWhitespace(parts[0]));
      uint64_t mib = 0;
      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(parts[1]), &mib)) info.memory_bytes = mib << 20;
    }
    return info;
  }
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
