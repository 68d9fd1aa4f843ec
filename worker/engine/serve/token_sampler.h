// Next-token selection for one completion of a generation request: penalties, bans, min_p, then
// the engine's sampler (eval/sampling.h), with the model's log-probabilities on request.
//
// Semantics (the API's, docs of GenerateRequest/SamplingParams): Next works on a copy of the raw
// logits (made only when one of these steps changes something), in this order:
//   (a) repetition_penalty p != 1: every token present in the prompt or the generated output gets
//       logit > 0 ? logit / p : logit * p, once however often it occurs (HF, vLLM);
//   (b) presence/frequency penalties (OpenAI, vLLM): logit -= presence * (count > 0) +
//       frequency * count, counting generated tokens only (not the prompt);
//   (c) banned ids get -inf;
//   (d) temperature 0: greedy, the largest logit, lowest id among equal maxima. Otherwise min_p:
//       tokens with (logit - max) / T < ln(min_p), i.e. probability < min_p × the largest
//       probability, get -inf; then mq::SampleToken (top_k, top_p, the Philox draw) with the
//       completion's seed, sequence 0 and step = steps().
// Sequence 0 and the completion's own seed make completion i of a request with seed s equal a
// request with seed s + i, and equal `mq-engine generate --seed s`. Without penalties, bans and
// min_p, the token is exactly mq::SampleToken's on the raw logits (greedy included).
// NaN and +inf logits (a numerical fault upstream) count as -inf everywhere, log-probabilities
// included. Not thread-safe: one sampler belongs to one sequence of the serving loop.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "serve/generation_params.h"
#include "util/status.h"

namespace mq::serve {

struct TopLogprob {
  int32_t token = 0;
  float logprob = 0;
};

struct TokenChoice {
  int32_t token = 0;
  // Log-softmax of the RAW logits at `token` (the model's distribution, before penalties,
  // temperature and cuts). Set when Next's top_n >= 0.
  float logprob = 0;
  // The top_n most likely tokens by raw logprob, most likely first (ties: lower id first); only
  // tokens with a finite logit, so fewer than top_n when fewer are finite.
  std::vector<TopLogprob> top;
};

// The model's log-probability of `token` under raw logits [V] (log-softmax, its sum in double,
// within ~1e-6 of an all-double one; non-finite logits count as -inf) and the top_n (0..V) most likely tokens: Score's per-position answer, and
// what Next reports. token must be in [0, V).
TokenChoice LogprobsAt(const float* logits, int64_t V, int32_t token, int32_t top_n);

// The greedy token of raw logits [V]: the lowest id holding the largest finite logit (NaN and
// ±inf count as -inf); -1 when no logit is finite. What Next chooses at temperature 0 without
// penalties or bans, and what the GPU's row arg max (cuda/row_argmax_kernel.cu) computes.
int32_t GreedyToken(const float* logits, int64_t V);

class TokenSampler {
 public:
  // seed: this completion's seed (the caller passes request seed + completion index; params.seed
  // is not read). prompt: the prompt ids, which the repetition penalty counts; ids outside
  // [0, vocab_size) are ignored.
  TokenSampler(const SamplingParams& params, uint64_t seed, int64_t vocab_size, const std::vector<int32_t>& prompt);

  // Chooses the token at step steps() from raw logits [vocab_size]. `banned` ids get -inf (the
  // caller's min_tokens mask of eos and stop ids; ids outside the vocabulary are ignored).
  // top_n < 0: no log-probability work at all; 0: the chosen token's logprob only; > 0: also the
  // top_n most likely tokens (at most vocab_size). Records the chosen token for the penalties
  // and advances steps(). InternalError "non-finite logits" when no token is left with a finite
  // logit (every logit NaN/-inf, or all banned); steps() does not advance then.
  StatusOr<TokenChoice> Next(const float* logits, const std::vector<int32_t>& banned, int32_t top_n);

  // Records a token chosen elsewhere (the device's greedy choice of a plain greedy step) as if
  // Next had chosen it: penalty counts and steps() advance alike.
  void Accept(int32_t token);

  int64_t steps() const { return steps_; }

 private:
  bool HasPenalties() const;
  // Penalties, bans, NaN → -inf and min_p applied into work_; returns its max (-inf: none left).
  float Prepare(const float* logits, const std::vector<int32_t>& banned);
  void Record(int32_t token);

  SamplingParams params_;
  uint64_t seed_;
  int64_t vocab_size_;
  int64_t steps_ = 0;
  bool repetition_ = false;  // repetition_penalty != 1
  bool additive_ = false;    // presence or frequency penalty != 0
  std::vector<int32_t> prompt_ids_;                  // distinct, sorted; only with repetition_
  std::unordered_map<int32_t, int32_t> generated_;   // token → count; only with any penalty
  std::vector<float> work_;                          // the modified copy, allocated on first need
};

}  // namespace mq::serve
