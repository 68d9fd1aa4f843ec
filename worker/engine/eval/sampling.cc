#include "eval/sampling.h"

#include <cmath>
#include <vector>

#include "eval/sampling_math.h"

namespace mq {

Status ValidateSampling(const SamplingOptions& o) {
  if (!std::isfinite(o.temperature) || o.temperature < 0.0f) return InvalidArgumentError("temperature must be ≥ 0");
  if (o.top_k < 0) return InvalidArgumentError("top_k must be ≥ 0");
  if (!(o.top_p > 0.0f && o.top_p <= 1.0f)) return InvalidArgumentError("top_p must be in (0, 1]");
  return OkStatus();
}

int32_t SampleToken(const float* logits, int64_t V, const SamplingOptions& o, uint64_t sequence, uint64_t step) {
  int64_t arg = 0;
  for (int64_t i = 1; i < V; ++i)
    if (logits[i] > logits[arg]) arg = i;
  if (o.temperature <= 0.0f) return static_cast<int32_t>(arg);
  const float m = logits[arg];
  // Candidates: logit key ≥ the k-th largest key.
  uint32_t kkey = 0;
  if (o.top_k > 0 && o.top_k < V) {
    kkey = sampling::LargestKey(
        [&](uint32_t k) {
          double n = 0;
          for (int64_t i = 0; i < V; ++i) n += sampling::OrderedKey(logits[i]) >= k ? 1.0 : 0.0;
          return n;
        },
        static_cast<double>(o.top_k));
  }
  std::vector<float> w(static_cast<size_t>(V));
  double total = 0.0;
  for (int64_t i = 0; i < V; ++i) {
    w[i] = sampling::OrderedKey(logits[i]) >= kkey ? sampling::Weight(logits[i], m, o.temperature) : 0.0f;
    total += w[i];
  }
  // Nucleus: weight bits ≥ the largest threshold whose set holds top_p of the mass (weights are
  // non-negative, so their bits order like their values).
  uint32_t tau = 0;
  if (o.top_p < 1.0f) {
    tau = sampling::LargestKey(
        [&](uint32_t t) {
          double s = 0;
          for (int64_t i = 0; i < V; ++i)
            if (FloatBits(w[i]) >= t) s += w[i];
          return s;
        },
        static_cast<double>(o.top_p) * total);
    for (int64_t i = 0; i < V; ++i)
      if (FloatBits(w[i]) < tau) w[i] = 0.0f;
  }
  double nucleus = 0.0;
  for (int64_t i = 0; i < V; ++i) nucleus += w[i];
  const double target = sampling::Uniform(o.seed, sequence, step) * nucleus;
  double run = 0.0;
  int64_t last = arg;
  for (int64_t i = 0; i < V; ++i) {
    if (w[i] <= 0.0f) continue;
    run += w[i];
    last = i;
    if (run > target) return static_cast<int32_t>(i);
  }
  return static_cast<int32_t>(last);  // rounding left the target at the very end
}

}  // namespace mq
