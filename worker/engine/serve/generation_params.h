// What a generation request asks for, and the one place its ranges are defined and checked. The
// server (through common/inference_request.h, which converts the proto) and the worker both call
// ValidateGenerationParams; the serving loop relies on it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "util/status.h"

namespace mq::serve {

// Fixed ranges of the API (docs/api.md). Deployment limits (prompt tokens, queue) are worker flags.
struct GenerationLimits {
  static constexpr int32_t kMaxNewTokens = 4096;
  static constexpr int32_t kDefaultMaxNewTokens = 16;
  static constexpr int32_t kMaxCompletions = 16;         // n
  static constexpr int32_t kMaxStopStrings = 16;
  static constexpr int32_t kMaxStopStringBytes = 256;
  static constexpr int32_t kMaxStopTokenIds = 64;
  static constexpr int32_t kMaxLogprobs = 20;
  static constexpr float kMaxTemperature = 100.0f;
  static constexpr int32_t kMaxTopK = 1000000;
  static constexpr float kMaxRepetitionPenalty = 10.0f;
  static constexpr float kMaxAbsPresencePenalty = 2.0f;   // presence and frequency
  // A text this many bytes per token of its limit cannot fit the limit however it tokenizes
  // (a token covers at most a few dozen bytes of ordinary text): refused before it is encoded,
  // or sent to a worker.
  static constexpr int64_t kMaxTextBytesPerToken = 64;
};

struct SamplingParams {
  float temperature = 0.0f;         // 0: greedy
  float top_p = 1.0f;               // (0, 1]
  int32_t top_k = 0;                // 0: off
  float min_p = 0.0f;               // [0, 1]
  float repetition_penalty = 1.0f;  // (0, 10]
  float presence_penalty = 0.0f;    // [-2, 2]
  float frequency_penalty = 0.0f;   // [-2, 2]
  uint64_t seed = 0;                // completion i draws with seed + i
};

struct GenerationParams {
  int32_t max_new_tokens = GenerationLimits::kDefaultMaxNewTokens;
  int32_t min_tokens = 0;
  SamplingParams sampling;
  std::vector<std::string> stop;
  std::vector<int32_t> stop_token_ids;
  bool ignore_eos = false;
  std::optional<int32_t> logprobs;  // unset: none; 0: chosen token; 1..20: alternatives too
  int32_t n = 1;
};

// Ranges of every field (vocabulary-dependent checks are ValidateForModel's).
Status ValidateGenerationParams(const GenerationParams& p);
// Checks against a model: stop_token_ids < vocab_size.
Status ValidateForModel(const GenerationParams& p, int64_t vocab_size);

}  // namespace mq::serve
