#include "serve/token_sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "eval/sampling.h"

namespace mq::serve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// False for NaN, +inf and -inf: the one test of "a usable logit".
inline bool Usable(float x) { return x > -kInf && x < kInf; }

// The model's log-probabilities from the raw logits: the chosen token's and the top_n best.
void FillLogprobs(const float* logits, int64_t V, int32_t top_n, TokenChoice* c) {
  double m = -std::numeric_limits<double>::infinity();
  for (int64_t i = 0; i < V; ++i)
    if (Usable(logits[i]) && logits[i] > m) m = logits[i];
  // Terms far below the max underflow to 0 in double only past ~745 nats, so double keeps the
  // log-sum-exp exact to float precision whatever the spread of the logits.
  double sum = 0.0;
  for (int64_t i = 0; i < V; ++i)
    if (Usable(logits[i])) sum += std::exp(static_cast<double>(logits[i]) - m);
  const double lse = m + std::log(sum);
  c->logprob = static_cast<float>(static_cast<double>(logits[c->token]) - lse);
  if (top_n <= 0) return;

  // Partial selection in one pass: a sorted buffer of the best k; most logits fail the one
  // comparison with the current k-th, so this costs about V comparisons.
  const size_t k = static_cast<size_t>(std::min<int64_t>(top_n, V));
  std::vector<std::pair<float, int32_t>> best;
  best.reserve(k + 1);
  for (int64_t i = 0; i < V; ++i) {
    const float x = logits[i];
    if (!Usable(x)) continue;
    // Strictly greater: ids ascend, so an equal logit already held keeps the lower id ahead.
    if (best.size() == k && !(x > best.back().first)) continue;
    auto pos = std::find_if(best.begin(), best.end(), [x](const auto& b) { return b.first < x; });
    best.insert(pos, {x, static_cast<int32_t>(i)});
    if (best.size() > k) best.pop_back();
  }
  c->top.reserve(best.size());
  for (const auto& [x, id] : best) c->top.push_back({id, static_cast<float>(static_cast<double>(x) - lse)});
}

}  // namespace

TokenChoice LogprobsAt(const float* logits, int64_t V, int32_t token, int32_t top_n) {
  TokenChoice c;
  c.token = token;
  FillLogprobs(logits, V, top_n, &c);
  return c;
}

TokenSampler::TokenSampler(const SamplingParams& params, uint64_t seed, int64_t vocab_size,
                           const std::vector<int32_t>& prompt)
    : params_(params), seed_(seed), vocab_size_(vocab_size) {
  repetition_ = params_.repetition_penalty != 1.0f;
  additive_ = params_.presence_penalty != 0.0f || params_.frequency_penalty != 0.0f;
  if (repetition_) {
    for (const int32_t id : prompt)
      if (id >= 0 && id < vocab_size_) prompt_ids_.push_back(id);
    std::sort(prompt_ids_.begin(), prompt_ids_.end());
    prompt_ids_.erase(std::unique(prompt_ids_.begin(), prompt_ids_.end()), prompt_ids_.end());
  }
}

bool TokenSampler::HasPenalties() const {
  return (repetition_ && (!prompt_ids_.empty() || !generated_.empty())) || (additive_ && !generated_.empty());
}

float TokenSampler::Prepare(const float* logits, const std::vector<int32_t>& banned) {
  const int64_t V = vocab_size_;
  work_.resize(static_cast<size_t>(V));
  float* w = work_.data();
  for (int64_t i = 0; i < V; ++i) w[i] = logits[i] < kInf ? logits[i] : -kInf;  // NaN, +inf → -inf

  if (repetition_) {
    const float p = params_.repetition_penalty;
    const auto apply = [&](int32_t t) { w[t] = w[t] > 0 ? w[t] / p : w[t] * p; };
    for (const int32_t t : prompt_ids_) apply(t);
    for (const auto& [t, count] : generated_)
      if (!std::binary_search(prompt_ids_.begin(), prompt_ids_.end(), t)) apply(t);
  }
  if (additive_) {
    // Two float steps in vLLM's order, so equal inputs give equal logits.
    for (const auto& [t, count] : generated_) {
      w[t] -= params_.frequency_penalty * static_cast<float>(count);
      w[t] -= params_.presence_penalty;
    }
  }
  for (const int32_t t : banned)
    if (t >= 0 && t < V) w[t] = -kInf;

  float m = -kInf;
  for (int64_t i = 0; i < V; ++i) m = w[i] > m ? w[i] : m;
  const float T = params_.temperature;
  if (T > 0.0f && params_.min_p > 0.0f && m > -kInf) {
    const double cut = std::log(static_cast<double>(params_.min_p));
    for (int64_t i = 0; i < V; ++i)
      if ((static_cast<double>(w[i]) - m) / T < cut) w[i] = -kInf;
  }
  return m;
}

void TokenSampler::Record(int32_t token) {
  if (repetition_ || additive_) ++generated_[token];
  ++steps_;
}

StatusOr<TokenChoice> TokenSampler::Next(const float* logits, const std::vector<int32_t>& banned, int32_t top_n) {
  const int64_t V = vocab_size_;
  const bool min_p = params_.temperature > 0.0f && params_.min_p > 0.0f;
  bool modify = HasPenalties() || !banned.empty() || min_p;
  const float* pick_from = logits;
  if (!modify) {
    // SampleToken assumes ordered values; one read-only pass decides whether the raw logits can
    // go to it as they are (the common case: no copy of the vocabulary).
    bool fault = false;
    float m = -kInf;
    for (int64_t i = 0; i < V; ++i) {
      const float x = logits[i];
      fault |= !(x < kInf);
      m = x > m ? x : m;
    }
    if (fault) modify = true;
    else if (!(m > -kInf)) return InternalError("non-finite logits: no token has a finite logit");
  }
  if (modify) {
    if (!(Prepare(logits, banned) > -kInf))
      return InternalError("non-finite logits: no token has a finite logit after bans (" +
                           std::to_string(banned.size()) + " banned)");
    pick_from = work_.data();
  }
  TokenChoice choice;
  const SamplingOptions options{params_.temperature, params_.top_k, params_.top_p, seed_};
  choice.token = SampleToken(pick_from, V, options, /*sequence=*/0, static_cast<uint64_t>(steps_));
  if (top_n >= 0) FillLogprobs(logits, V, top_n, &choice);
  Record(choice.token);
  return choice;
}

}  // namespace mq::serve
