// Small helpers shared by the engine tests.
#pragma once

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace mq::testing {

inline double RelError(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double diff = static_cast<double>(a[i]) - ref[i];
    num += diff * diff;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

inline std::vector<int32_t> ToInt32(const TensorView& v) {
  auto wide = ToInt64(v);
  return wide.ok() ? std::vector<int32_t>(wide->begin(), wide->end()) : std::vector<int32_t>{};
}

// Runs a shell command, returning its stdout and exit code.
struct CommandResult {
  int exit_code = -1;
  std::string output;
};
inline CommandResult RunCommand(const std::string& cmd) {
  CommandResult r;
  FILE* p = ::popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, p)) > 0) r.output.append(buf, n);
  const int status = ::pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

}  // namespace mq::testing
