#include "eval/perplexity.h"

#include <algorithm>
#include <cmath>

#include "cpu/mamba_forward.h"
#include "serve/sequence_backend.h"

namespace mq {
namespace {

// Windows go through the forward pass this many at a time: enough rows for efficient GEMMs,
// small enough that the [rows, vocab] logits stay modest for 50k vocabularies.
constexpr int64_t kWindowsPerBatch = 8;

// log-softmax of one row into out (double for the sums).
void LogSoftmax(const float* x, int64_t n, std::vector<double>* out) {
  out->resize(static_cast<size_t>(n));
  const float mx = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(x[i]) - mx);
  const double lse = mx + std::log(sum);
  for (int64_t i = 0; i < n; ++i) (*out)[i] = static_cast<double>(x[i]) - lse;
}

// Runs each batch of windows through `models` and hands the per-model logits to `consume`.
Status ForEachWindowBatch(const std::vector<const MambaWeights*>& models, const std::vector<int32_t>& tokens,
                          int64_t window, const EvalProgress& progress,
                          const std::function<void(const std::vector<std::vector<float>>&, const int32_t*, int64_t)>& consume) {
  MQ_ASSIGN_OR_RETURN(const std::vector<int64_t> starts, EvaluationWindows(static_cast<int64_t>(tokens.size()), window));
  const int64_t total = static_cast<int64_t>(starts.size());
  std::vector<std::vector<float>> logits(models.size());
  for (int64_t i0 = 0; i0 < total; i0 += kWindowsPerBatch) {
    const int64_t nb = std::min(kWindowsPerBatch, total - i0);
    std::vector<int32_t> ids(static_cast<size_t>(nb * window));
    for (int64_t b = 0; b < nb; ++b)
      std::copy_n(tokens.begin() + starts[i0 + b], window, ids.begin() + b * window);
    for (size_t m = 0; m < models.size(); ++m) {
      cpu::MambaState state = cpu::MambaState::Zeros(models[m]->config, nb);
      MQ_RETURN_IF_ERROR(cpu::MambaForward(*models[m], ids.data(), nb, window, &state, &logits[m]));
    }
    consume(logits, ids.data(), nb);
    if (progress && !progress(i0 + nb, total)) return CancelledError("evaluation cancelled");
  }
  return OkStatus();
}

}  // namespace

std::vector<int64_t> WindowStarts(int64_t total_tokens, int64_t window) {
  std::vector<int64_t> starts;
  for (int64_t s = 0; s + window < total_tokens; s += window) starts.push_back(s);
  return starts;
}

StatusOr<std::vector<int64_t>> EvaluationWindows(int64_t total_tokens, int64_t window) {
  if (window < 2) return InvalidArgumentError("evaluation window must be at least 2 tokens");
  std::vector<int64_t> starts = WindowStarts(total_tokens, window);
  if (starts.empty())
    return InvalidArgumentError("text has " + std::to_string(total_tokens) + " tokens, fewer than one window of " +
                                std::to_string(window) + " plus one");
  return starts;
}

StatusOr<PerplexityResult> EvaluatePerplexity(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                              int64_t window, const EvalProgress& progress) {
  PerplexityResult r;
  double nll = 0;
  const int64_t V = w.V();
  std::vector<double> lp;
  MQ_RETURN_IF_ERROR(ForEachWindowBatch({&w}, tokens, window, progress,
      [&](const std::vector<std::vector<float>>& logits, const int32_t* ids, int64_t nb) {
        for (int64_t b = 0; b < nb; ++b) {
          for (int64_t l = 0; l + 1 < window; ++l) {
            LogSoftmax(logits[0].data() + (b * window + l) * V, V, &lp);
            nll -= lp[ids[b * window + l + 1]];
            ++r.tokens_scored;
          }
          ++r.windows;
        }
      }));
  r.mean_nll = nll / static_cast<double>(r.tokens_scored);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

StatusOr<PerplexityResult> EvaluateDecodePerplexity(serve::SequenceBackend& backend, const std::vector<int32_t>& tokens,
                                                    int64_t window, const EvalProgress& progress) {
  MQ_ASSIGN_OR_RETURN(const std::vector<int64_t> starts, EvaluationWindows(static_cast<int64_t>(tokens.size()), window));
  const int64_t total = static_cast<int64_t>(starts.size());
  const int64_t V = backend.config().vocab_size;
  const int64_t per_step = std::min(backend.options().max_batch, backend.options().num_slots);
  PerplexityResult r;
  double nll = 0;
  std::vector<double> lp;
  std::vector<int32_t> slots(static_cast<size_t>(per_step)), ids(static_cast<size_t>(per_step));
  std::vector<float> logits(static_cast<size_t>(per_step * V));
  for (int64_t i0 = 0; i0 < total; i0 += per_step) {
    const int64_t nb = std::min(per_step, total - i0);
    for (int64_t b = 0; b < nb; ++b) {
      slots[static_cast<size_t>(b)] = static_cast<int32_t>(b);
      MQ_RETURN_IF_ERROR(backend.ResetSlot(static_cast<int32_t>(b)));
    }
    for (int64_t l = 0; l + 1 < window; ++l) {
      for (int64_t b = 0; b < nb; ++b) ids[static_cast<size_t>(b)] = tokens[static_cast<size_t>(starts[i0 + b] + l)];
      MQ_RETURN_IF_ERROR(backend.Decode(slots.data(), ids.data(), nb, logits.data()));
      for (int64_t b = 0; b < nb; ++b) {
        LogSoftmax(logits.data() + b * V, V, &lp);
        nll -= lp[tokens[static_cast<size_t>(starts[i0 + b] + l + 1)]];
        ++r.tokens_scored;
      }
    }
    r.windows += nb;
    if (progress && !progress(i0 + nb, total)) return CancelledError("evaluation cancelled");
  }
  r.mean_nll = nll / static_cast<double>(r.tokens_scored);
  r.perplexity = std::exp(r.mean_nll);
  return r;
}

ComparisonResult ComparisonSums::Result() const {
  ComparisonResult c;
  const double n = static_cast<double>(positions);
  for (PerplexityResult* r : {&c.reference, &c.candidate}) {
    r->tokens_scored = positions;
    r->windows = windows;
  }
  c.reference.mean_nll = nll_reference / n;
  c.candidate.mean_nll = nll_candidate / n;
  c.reference.perplexity = std::exp(c.reference.mean_nll);
  c.candidate.perplexity = std::exp(c.candidate.mean_nll);
  c.top1_agreement = static_cast<double>(agree) / n;
  c.mean_kl = kl / n;
  return c;
}

StatusOr<std::vector<ComparisonResult>> CompareModels(const MambaWeights& reference,
                                                      const std::vector<const MambaWeights*>& candidates,
                                                      const std::vector<int32_t>& tokens, int64_t window,
                                                      const EvalProgress& progress) {
  for (const MambaWeights* c : candidates)
    if (c->V() != reference.V()) return InvalidArgumentError("models have different vocabularies");
  const int64_t V = reference.V();
  const size_t M = candidates.size();
  std::vector<ComparisonSums> sums(M);
  std::vector<double> lp_ref, lp_cand;
  std::vector<const MambaWeights*> models = {&reference};
  models.insert(models.end(), candidates.begin(), candidates.end());
  MQ_RETURN_IF_ERROR(ForEachWindowBatch(models, tokens, window, progress,
      [&](const std::vector<std::vector<float>>& logits, const int32_t* ids, int64_t nb) {
        for (int64_t b = 0; b < nb; ++b) {
          for (int64_t l = 0; l + 1 < window; ++l) {
            const int64_t row = (b * window + l) * V;
            const float* xr = logits[0].data() + row;
            LogSoftmax(xr, V, &lp_ref);
            const int32_t target = ids[b * window + l + 1];
            const int64_t arg_ref = std::max_element(xr, xr + V) - xr;
            for (size_t m = 0; m < M; ++m) {
              const float* xc = logits[m + 1].data() + row;
              LogSoftmax(xc, V, &lp_cand);
              ComparisonSums& s = sums[m];
              s.nll_reference -= lp_ref[target];
              s.nll_candidate -= lp_cand[target];
              double k = 0;
              for (int64_t v = 0; v < V; ++v) k += std::exp(lp_ref[v]) * (lp_ref[v] - lp_cand[v]);
              s.kl += k;
              s.agree += arg_ref == (std::max_element(xc, xc + V) - xc);
              ++s.positions;
            }
          }
          for (ComparisonSums& s : sums) ++s.windows;
        }
      }));
  std::vector<ComparisonResult> out;
  for (const ComparisonSums& s : sums) out.push_back(s.Result());
  return out;
}

StatusOr<ComparisonResult> CompareModels(const MambaWeights& reference, const MambaWeights& candidate,
                                         const std::vector<int32_t>& tokens, int64_t window,
                                         const EvalProgress& progress) {
  MQ_ASSIGN_OR_RETURN(std::vector<ComparisonResult> r, CompareModels(reference, std::vector<const MambaWeights*>{&candidate},
                                                                     tokens, window, progress));
  return r[0];
}

}  // namespace mq
