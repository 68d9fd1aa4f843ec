// Greedy generation on the CPU reference path, batched, stopping at eos.
#pragma once

#include <cstdint>
#include <vector>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {

struct GenerationOptions {
  int64_t max_new_tokens = 32;
  int32_t eos_id = 0;
  int32_t pad_id = 1;  // fills a finished row, as transformers' generate does
};

// Returns, per prompt, the prompt followed by its greedy continuation. All rows have the same
// length: a row that hit eos is padded with pad_id (matching transformers' batched generate).
StatusOr<std::vector<std::vector<int32_t>>> GreedyGenerate(const MambaWeights& w,
                                                           const std::vector<std::vector<int32_t>>& prompts,
                                                           const GenerationOptions& options);

}  // namespace mq
