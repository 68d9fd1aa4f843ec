// Next-token selection: greedy or sampled (temperature, top-k, top-p), reproducible from a seed.
// The semantics are in eval/sampling_math.h; the GPU decode loop implements the same.
#pragma once

#include <cstdint>

#include "util/status.h"

namespace mq {

struct SamplingOptions {
  float temperature = 0.0f;  // 0: greedy
  int32_t top_k = 0;         // 0: no top-k cut
  float top_p = 1.0f;        // 1: no nucleus cut
  uint64_t seed = 0;
  bool operator==(const SamplingOptions&) const = default;
};

// temperature finite and ≥ 0, top_k ≥ 0, top_p in (0, 1].
Status ValidateSampling(const SamplingOptions& o);

// The token for row `sequence` at decode step `step` from its V logits.
int32_t SampleToken(const float* logits, int64_t V, const SamplingOptions& o, uint64_t sequence, uint64_t step);

}  // namespace mq
