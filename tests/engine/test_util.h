// Small helpers shared by the engine tests.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "test_paths.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"

namespace mq::testing {

// ‖a − ref‖ / ‖ref‖; infinite when a holds NaN or Inf.
inline double RelError(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(a[i])) return INFINITY;
    const double diff = static_cast<double>(a[i]) - ref[i];
    num += diff * diff;
    den += static_cast<double>(ref[i]) * ref[i];
  }
  return std::sqrt(num / den);
}

inline std::vector<int32_t> ToInt32(const TensorView& v) {
  auto wide = ToInt64(v);
  EXPECT_TRUE(wide.ok()) << wide.status().ToString();
  return wide.ok() ? std::vector<int32_t>(wide->begin(), wide->end()) : std::vector<int32_t>{};
}

// Seeded random test data: INT8 in [−127, 127], floats uniform in [lo, hi).
// Four bytes as the little-endian word a GPU's 32-bit load gives: the dp4a and packed-int4 words
// the CUDA twins emulate.
inline uint32_t LeWord(const void* p) {
  const auto* b = static_cast<const uint8_t*>(p);
  return static_cast<uint32_t>(b[0]) | static_cast<uint32_t>(b[1]) << 8 | static_cast<uint32_t>(b[2]) << 16 |
         static_cast<uint32_t>(b[3]) << 24;
}
inline int32_t Int8Word(const int8_t* p) { return static_cast<int32_t>(LeWord(p)); }
inline std::vector<int8_t> RandomInt8(size_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int8_t> v(n);
  for (auto& x : v) x = static_cast<int8_t>(static_cast<int>(g() % 255) - 127);
  return v;
}
inline std::vector<float> RandomFloat(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::mt19937_64 g(seed);
  std::vector<float> v(n);
  for (auto& x : v) x = lo + (hi - lo) * static_cast<float>(g() >> 40) * (1.0f / 16777216.0f);
  return v;
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

// models/text/eval.txt tokenized with the tokenizer of `model_dir` (documents joined by eos);
// empty, with a test failure, when that fails.
inline std::vector<int32_t> EvalTextTokens(const std::string& model_dir, int32_t eos) {
  auto tok = Tokenizer::LoadFromFile(model_dir + "/tokenizer.json");
  EXPECT_TRUE(tok.ok()) << tok.status().ToString();
  if (!tok.ok()) return {};
  std::ifstream in(RepoPath("models/text/eval.txt"), std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  auto tokens = TokenizeDocuments(*tok, ss.str(), eos);
  EXPECT_TRUE(tokens.ok()) << tokens.status().ToString();
  return tokens.ok() ? *tokens : std::vector<int32_t>{};
}

}  // namespace mq::testing
