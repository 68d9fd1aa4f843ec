#include "cuda/cuda_perplexity.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace mq::cuda {

StatusOr<PerplexityResult> EvaluatePerplexityCuda(CudaMambaModel& model, const std::vector<int32_t>& tokens,
                                                  int64_t window, int64_t windows_per_batch) {
  MQ_ASSIGN_OR_RETURN(const std::vector<int64_t> starts, EvaluationWindows(static_cast<int64_t>(tokens.size()), window));
  const int64_t V = model.config().vocab_size;
  PerplexityResult r;
  double nll = 0;
  std::vector<float> logits;
  const int64_t total = static_cast<int64_t>(starts.size());
  for (int64_t i0 = 0; i0 < total; i0 += windows_per_batch) {
    const int64_t nb = std::min(windows_per_batch, total - i0);
    std::vector<int32_t> ids(static_cast<size_t>(nb * window)), slots(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) {
      std::copy_n(tokens.begin() + starts[i0 + b], window, ids.begin() + b * window);
      slots[b] = static_cast<int32_t>(b);
    }
    MQ_RETURN_IF_ERROR(model.ResetSlots(slots));
    MQ_RETURN_IF_ERROR(model.Forward(ids, slots, nb, window, LogitsMode::kAll, &logits));
    for (int64_t b = 0; b < nb; ++b) {
      for (int64_t l = 0; l + 1 < window; ++l) {
        const float* x = logits.data() + (b * window + l) * V;
        const float mx = *std::max_element(x, x + V);
        double sum = 0;
        for (int64_t i = 0; i < V; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
        const double lse = mx + std::log(sum);
        nll -= static_cast<double>(x[ids[b * window + l + 1]]) - lse;
        ++r.tokens_scored;
      }
      ++r.windows;
    }
  }
  r.mean_nll = nll / static_cast<double>(r.tokens_scored);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

}  // namespace mq::cuda
