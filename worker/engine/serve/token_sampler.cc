#include "serve/token_sampler.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "eval/sampling.h"
#include "eval/sampling_math.h"

namespace mq::serve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// False for NaN, +inf and -inf: the one test of "a usable logit".
inline bool Usable(float x) { return x > -kInf && x < kInf; }

// Smallest and largest order-preserving key (sampling::OrderedKey) of n floats: an integer
// reduction, which the compiler vectorizes where a float max with NaN semantics it does not. From
// it: the max, and whether any NaN or +inf is present, in one pass over the vocabulary.
struct KeyRange {
  uint32_t lo = 0xFFFFFFFFu, hi = 0;
  // NaN (either sign) and +inf lie outside [key(-inf), key(+inf)).
  bool Fault() const { return hi >= sampling::OrderedKey(kInf) || lo < sampling::OrderedKey(-kInf); }
  bool AnyFinite() const { return hi > sampling::OrderedKey(-kInf); }
  float Max() const {
    const uint32_t b = (hi & 0x80000000u) ? (hi & 0x7FFFFFFFu) : ~hi;
    float x;
    std::memcpy(&x, &b, 4);
    return x;
  }
};

KeyRange Keys(const float* x, int64_t n) {
  KeyRange r;
  for (int64_t i = 0; i < n; ++i) {
    const uint32_t k = sampling::OrderedKey(x[i]);
    r.hi = k > r.hi ? k : r.hi;
    r.lo = k < r.lo ? k : r.lo;
  }
  return r;
}

// Greedy: the lowest index holding the max, which is what SampleToken's argmax loop returns for
// NaN-free logits (±0 compare equal in both).
int32_t FirstAt(const float* x, int64_t n, float m) {
  for (int64_t i = 0; i < n; ++i)
    if (x[i] == m) return static_cast<int32_t>(i);
  return 0;
}

// exp(x) for x ≤ 0 (logit − max, never NaN), Cephes' expf polynomial (relative error < 1e-7),
// branch-free with integer masks so that the loop over the vocabulary vectorizes (libm's exp
// does not without -ffast-math, and it is most of the cost of log-probabilities). Below -87
// (e^-87 ≈ 1.6e-38; -inf included) it returns 0, which cannot move a sum whose largest term is 1.
inline float ExpNonPositive(float x) {
  constexpr uint32_t kLowBits = 0xC2AE0000u;  // -87.0f; for x ≤ 0 the bits grow with |x|
  uint32_t b;
  std::memcpy(&b, &x, 4);
  const uint32_t in_range = 0u - static_cast<uint32_t>(b <= kLowBits);
  b = std::min(b, kLowBits);
  std::memcpy(&x, &b, 4);
  const int32_t ni = static_cast<int32_t>(x * 1.44269504088896341f - 0.5f);  // nearest, for x ≤ 0
  const float n = static_cast<float>(ni);
  const float r = x - n * 0.693359375f + n * 2.12194440e-4f;  // x − n·ln 2 in two parts
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  const float y = p * r * r + r + 1.0f;
  const uint32_t scale_bits = (static_cast<uint32_t>(ni + 127) << 23) & in_range;  // 2^n, or 0
  float scale;
  std::memcpy(&scale, &scale_bits, 4);
  return y * scale;
}

// Σ exp(x[i] − m) over x ≤ m with no NaN/+inf: the terms in vectorized chunks, summed in double.
double SumExp(const float* x, int64_t n, float m) {
  constexpr int64_t kChunk = 512;
  float terms[kChunk];
  double acc[4] = {0, 0, 0, 0};
  for (int64_t base = 0; base < n; base += kChunk) {
    const int64_t len = std::min(kChunk, n - base);
    for (int64_t i = 0; i < len; ++i) terms[i] = ExpNonPositive(x[base + i] - m);
    int64_t i = 0;
    for (; i + 4 <= len; i += 4)
      for (int j = 0; j < 4; ++j) acc[j] += terms[i + j];
    for (; i < len; ++i) acc[0] += terms[i];
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

// The model's log-probabilities from the raw logits: the chosen token's and the top_n best.
void FillLogprobs(const float* logits, int64_t V, int32_t top_n, TokenChoice* c) {
  const KeyRange keys = Keys(logits, V);
  if (!keys.AnyFinite() && !keys.Fault()) {  // every logit -inf: nothing has probability
    c->logprob = -kInf;
    return;
  }
  double sum = 0.0;
  float m = keys.Max();
  // Terms in float (each within ~1e-7), their sum in double: ~50k terms then lose nothing that
  // reaches the float result.
  if (!keys.Fault()) {
    sum = SumExp(logits, V, m);
  } else {
    m = -kInf;
    for (int64_t i = 0; i < V; ++i)
      if (Usable(logits[i]) && logits[i] > m) m = logits[i];
    for (int64_t i = 0; i < V; ++i)
      if (Usable(logits[i])) sum += std::exp(logits[i] - m);
  }
  if (!(m > -kInf)) {  // NaN/+inf/-inf only
    c->logprob = -kInf;
    return;
  }
  const double lse = static_cast<double>(m) + std::log(sum);
  const float chosen = logits[c->token];
  c->logprob = Usable(chosen) ? static_cast<float>(static_cast<double>(chosen) - lse) : -kInf;
  if (top_n <= 0) return;

  // Partial selection in one pass, no copy or sort of the vocabulary: a sorted buffer of the best
  // k, which a logit enters only by beating the k-th.
  const size_t k = static_cast<size_t>(std::min<int64_t>(top_n, V));
  std::vector<std::pair<float, int32_t>> best;
  best.reserve(k + 1);
  float bar = -kInf;  // the k-th best so far once k are held: what a newcomer must beat
  constexpr int64_t kChunk = 256;
  for (int64_t base = 0; base < V; base += kChunk) {
    const int64_t end = std::min(V, base + kChunk);
    // Once the bar is high, whole chunks fall below it: a vectorized max skips them.
    if (Keys(logits + base, end - base).hi <= sampling::OrderedKey(bar)) continue;
    for (int64_t i = base; i < end; ++i) {
      const float x = logits[i];
      // Strictly greater: ids ascend, so an equal logit already held keeps the lower id ahead.
      if (!(x > bar) || !Usable(x)) continue;
      auto pos = std::find_if(best.begin(), best.end(), [x](const auto& b) { return b.first < x; });
      best.insert(pos, {x, static_cast<int32_t>(i)});
      if (best.size() > k) best.pop_back();
      if (best.size() == k) bar = best.back().first;
    }
  }
  c->top.reserve(best.size());
  for (const auto& [x, id] : best) c->top.push_back({id, static_cast<float>(static_cast<double>(x) - lse)});
}

}  // namespace

int32_t GreedyToken(const float* logits, int64_t V) {
  int32_t arg = -1;
  float best = 0.0f;
  for (int64_t i = 0; i < V; ++i) {
    const float x = logits[i];
    if (Usable(x) && (arg < 0 || x > best)) {
      best = x;
      arg = static_cast<int32_t>(i);
    }
  }
  return arg;
}

void TokenSampler::Accept(int32_t token) { Record(token); }

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
    // Saturated at the largest float: a penalty near 0 (1e-45 is inside (0, 10]) takes a positive
    // logit past it, and a +inf weight makes the draw NaN (the seed was then ignored). The quotient
    // and product in double, rounded once, equal float arithmetic wherever that does not overflow.
    // -inf (banned, NaN) stays -inf.
    constexpr double kMax = std::numeric_limits<float>::max();
    const auto apply = [&](int32_t t) {
      if (!(w[t] > -kInf)) return;
      const double v = w[t] > 0 ? static_cast<double>(w[t]) / p : static_cast<double>(w[t]) * p;
      w[t] = static_cast<float>(std::clamp(v, -kMax, kMax));
    };
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

  const KeyRange keys = Keys(w, V);
  if (!keys.AnyFinite()) return -kInf;
  const float m = keys.Max();
  const float T = params_.temperature;
  if (T > 0.0f && params_.min_p > 0.0f) {
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
  const float* pick_from = logits;
  float m = -kInf;
  bool modify = HasPenalties() || !banned.empty() || min_p;
  if (!modify) {
    // The common case goes to the sampler without a copy of the vocabulary; one read-only pass
    // checks that the raw logits are fit for it (SampleToken assumes no NaN).
    const KeyRange keys = Keys(logits, V);
    if (keys.Fault()) {
      modify = true;
    } else {
      if (!keys.AnyFinite()) return InternalError("non-finite logits: no token has a finite logit");
      m = keys.Max();
    }
  }
  if (modify) {
    m = Prepare(logits, banned);
    if (!(m > -kInf)) {
      return InternalError("non-finite logits: no token has a finite logit after bans (" +
                           std::to_string(banned.size()) + " banned)");
    }
    pick_from = work_.data();
  }
  TokenChoice choice;
  if (params_.temperature > 0.0f) {
    const SamplingOptions options{params_.temperature, params_.top_k, params_.top_p, seed_};
    choice.token = SampleToken(pick_from, V, options, /*sequence=*/0, static_cast<uint64_t>(steps_));
  } else {
    choice.token = FirstAt(pick_from, V, m);
  }
  if (top_n >= 0) FillLogprobs(logits, V, top_n, &choice);
  Record(choice.token);
  return choice;
}

}  // namespace mq::serve
