// Generation on the CPU reference path (greedy or sampled, eval/sampling.h), batched, stopping at eos.
#pragma once

#include <cstdint>
#include <vector>

#include "eval/sampling.h"
#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  int32_t eos_id = 0;
  int32_t pad_id = 1;  // fills a finished row, as transformers' generate does
  SamplingOptions sampling;  // default: greedy
};

// Returns, per prompt, the prompt followed by its continuation; row b's token at step s is
// SampleToken(logits, V, options.sampling, b, s). All rows have the same length: a row that hit
// eos is padded with pad_id (matching transformers' batched generate).
StatusOr<std::vector<std::vector<int32_t>>> Generate(const MambaWeights& w, const std::vector<std::vector<int32_t>>& prompts,
                                                     const GenerationOptions& options);

}  // namespace mq
