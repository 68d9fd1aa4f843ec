// Perplexity by the fixtures' protocol: non-overlapping windows of `window` tokens starting at
// 0, window, 2·window, … for every start s with s + window < total; each window starts from an
// empty state and scores its window − 1 next-token predictions.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {
namespace serve {
class SequenceBackend;
}  // namespace serve

struct PerplexityResult {
  double perplexity = 0;
  double mean_nll = 0;
  int64_t tokens_scored = 0;
  int64_t windows = 0;
};

struct ComparisonResult {
  PerplexityResult reference;   // e.g. the float model
  PerplexityResult candidate;   // e.g. the quantized model
  double top1_agreement = 0;    // share of positions whose argmax token is the same
  double mean_kl = 0;           // mean KL(reference ‖ candidate) per scored position, nats
};

// Sums over the scored positions of a comparison; every device's evaluation turns them into a
// ComparisonResult by this one rule.
struct ComparisonSums {
  double nll_reference = 0, nll_candidate = 0, kl = 0;
  int64_t agree = 0, positions = 0, windows = 0;
  ComparisonResult Result() const;
};

// Window starts by the protocol above.
std::vector<int64_t> WindowStarts(int64_t total_tokens, int64_t window);
// The same, InvalidArgument when the window is under 2 tokens or the text holds no window.
StatusOr<std::vector<int64_t>> EvaluationWindows(int64_t total_tokens, int64_t window);

// Called between window batches with (windows done, windows total); return false to cancel.
using EvalProgress = std::function<bool(int64_t, int64_t)>;

StatusOr<PerplexityResult> EvaluatePerplexity(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                              int64_t window, const EvalProgress& progress = nullptr);

// The same protocol with every token fed as one decode step through a serving backend (CPU or
// GPU), so the recurrent state is stored — and rounded to the backend's state dtype — after every
// token, as in generation; EvaluatePerplexity's prefill stores it once a window. Windows run
// min(max_batch, num_slots) at a time in slots 0 … B−1 (reset first).
StatusOr<PerplexityResult> EvaluateDecodePerplexity(serve::SequenceBackend& backend, const std::vector<int32_t>& tokens,
                                                    int64_t window, const EvalProgress& progress = nullptr);

StatusOr<ComparisonResult> CompareModels(const MambaWeights& reference, const MambaWeights& candidate,
                                         const std::vector<int32_t>& tokens, int64_t window,
                                         const EvalProgress& progress = nullptr);

// One pass for many candidates: the reference runs once per batch of windows.
StatusOr<std::vector<ComparisonResult>> CompareModels(const MambaWeights& reference,
                                                      const std::vector<const MambaWeights*>& candidates,
                                                      const std::vector<int32_t>& tokens, int64_t window,
                                                      const EvalProgress& progress = nullptr);

}  // namespace mq
