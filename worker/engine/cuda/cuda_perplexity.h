// Perplexity on the GPU by the fixtures' protocol (eval/perplexity.h): windows of `window`
// tokens, each from an empty state, `windows_per_batch` windows per forward; the log-softmax
// runs on the host in double exactly as EvaluatePerplexity does.
#pragma once

#include <cstdint>
#include <vector>

#include "cuda/cuda_mamba_model.h"
#include "eval/perplexity.h"
#include "util/status.h"

namespace mq::cuda {

StatusOr<PerplexityResult> EvaluatePerplexityCuda(CudaMambaModel& model, const std::vector<int32_t>& tokens,
                                                  int64_t window, int64_t windows_per_batch);

}  // namespace mq::cuda
