// Continuous batching for one loaded model: a single loop thread owns the SequenceBackend and
// runs iterations of
//   1. admit waiting calls (each needs n free state slots; the queue is bounded),
//   2. prefill: one chunk of admitted prompts (≤ max_prefill_tokens in all: the first waiting
//      prompt's next chunk, joined by others with as many tokens left, in one backend call), so a
//      long prompt, or many arriving together, stall the running streams by one chunk only,
//   3. one decode step of every decoding sequence (new sequences join, finished ones leave),
//   4. sampling, detokenization and stop checks per sequence; events go to each call's sink.
// Cancellation (Cancel, or a sink that reports the client gone) frees the call's slots at the next
// iteration boundary, i.e. within one decode step. Everything the loop needs is allocated when the
// engine is created. The per-sequence state machine is serve/sequence_state.h.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "serve/generation_params.h"
#include "serve/sequence_backend.h"
#include "serve/token_sampler.h"
#include "util/status.h"

namespace mq {
class Tokenizer;
}

namespace mq::serve {

struct ServingOptions {
  SequenceBackendOptions backend;
  int32_t max_waiting = 256;         // calls queued beyond the running ones (RESOURCE_EXHAUSTED past it)
  int32_t max_prompt_tokens = 8192;  // INVALID_ARGUMENT past it
  int32_t max_new_tokens = GenerationLimits::kMaxNewTokens;
  int32_t max_score_tokens = 8192;
};
Status ValidateServingOptions(const ServingOptions& o);

// What a generation call asks for. Exactly one of prompt_ids / prompt_text is used (has_text).
struct GenerationInput {
  bool has_text = false;
  std::string prompt_text;
  std::vector<int32_t> prompt_ids;
  GenerationParams params;
  bool seed_given = false;            // else the engine draws a seed and reports it
  bool return_prompt_logits = false;  // the next-token logits after the prompt, on the first event
};

struct GenerationEvent {
  int32_t index = 0;                 // completion 0..n−1
  std::vector<int32_t> token_ids;    // new tokens since this completion's previous event
  std::string text;                  // text delta (valid UTF-8)
  std::vector<TokenChoice> logprobs; // one per token when logprobs were asked for
  bool first = false;                // this completion's first event: seed and queue time are set
  uint64_t seed = 0;
  double queue_seconds = 0;          // submit → prefill start
  std::string finish_reason;         // set on the completion's last event: length | stop | eos
  std::string stop_string;
  int32_t prompt_tokens = 0;         // set on the completion's last event
  int32_t completion_tokens = 0;
  bool call_done = false;            // every completion of the call has finished
  std::vector<float> prompt_logits;  // [V], first event of completion 0 when asked for
};

struct ScoreInput {
  bool has_text = false;
  std::string text;
  std::vector<int32_t> ids;
  int32_t top_logprobs = 0;  // 0..20
};

struct ScoreResult {
  std::vector<int32_t> token_ids;
  std::vector<TokenChoice> logprobs;  // position i scores token_ids[i + 1]
  double mean_nll = 0;
  double perplexity = 0;
};

// Sinks run on the loop thread and must not block. A generation sink returns false when its
// client is gone: the call is then dropped like a Cancel.
using GenerationSink = std::function<bool(GenerationEvent&&)>;
using ScoreSink = std::function<void(StatusOr<ScoreResult>&&)>;
// Called with the call's terminal error (never OK) when a generation fails or is cancelled after
// it was accepted; a call that finished normally ends with an event whose call_done is set.
using ErrorSink = std::function<void(const Status&)>;

struct ServingStats {
  int32_t running = 0;   // sequences holding a slot (prefilling or decoding)
  int32_t waiting = 0;   // calls queued for slots
  int32_t free_slots = 0;
  int64_t decode_steps = 0;
  int64_t generated_tokens = 0;
};

// After every decode step: its batch size and duration (metrics).
using StepObserver = std::function<void(int64_t batch, double seconds)>;

class ServingEngine {
 public:
  static StatusOr<std::unique_ptr<ServingEngine>> Create(std::unique_ptr<SequenceBackend> backend,
                                                         std::shared_ptr<const Tokenizer> tokenizer,
                                                         const ServingOptions& options);
  // Stops the loop; calls still queued or running end with CANCELLED ("model unloaded").
  ~ServingEngine();
  ServingEngine(const ServingEngine&) = delete;
  ServingEngine& operator=(const ServingEngine&) = delete;

  // Validates (parameters, prompt length against max_prompt_tokens, ids against the vocabulary)
  // and queues. INVALID_ARGUMENT or RESOURCE_EXHAUSTED here means nothing was queued. call_id must
  // be unique among live calls (ALREADY_EXISTS otherwise).
  Status SubmitGenerate(const std::string& call_id, GenerationInput input, GenerationSink on_event, ErrorSink on_error);
  Status SubmitScore(const std::string& call_id, ScoreInput input, ScoreSink on_result);
  // Drops the call (queued or running) before the next decode step; its ErrorSink gets CANCELLED.
  // Unknown ids are ignored (the call may have just finished).
  void Cancel(const std::string& call_id);

  ServingStats stats() const;
  void SetStepObserver(StepObserver observer);
  const SequenceBackend& backend() const { return *backend_; }
  const ServingOptions& options() const { return options_; }

 private:
  struct Call;
  struct Sequence;
  ServingEngine(std::unique_ptr<SequenceBackend> backend, std::shared_ptr<const Tokenizer> tokenizer,
                const ServingOptions& options);
  // The token ids of a prompt or scored text (`what`), at most `limit` of them.
  StatusOr<std::vector<int32_t>> TokensOf(bool has_text, const std::string& text, const std::vector<int32_t>& ids,
                                          int32_t limit, const std::string& what) const;
  // Queues a checked call (RESOURCE_EXHAUSTED when the queue is full).
  Status Enqueue(std::shared_ptr<Call> call);
  void Loop();
  void AdmitWaiting();
  bool PrefillOne();
  // One chunk of n tokens of several prompts in one backend call (PrefillBatch).
  void PrefillGroup(const std::vector<Call*>& group, int64_t n);
  void DecodeStep();
  void RunScore(Call& call);
  void DropCancelled();
  bool QueueFull() const;  // under mu_
  void FailCall(Call& call, const Status& status);
  void ReleaseCallSlots(Call& call);
  Status Emit(Sequence& s, GenerationEvent&& e);
  Status StartCompletions(Call& call, const std::vector<float>& last_logits);
  Status SampleAndAdvance(Sequence& s, const float* logits);
  // Greedy without penalties, log-probabilities or bans: the token is GreedyToken of the logits,
  // which the backend may pick on its device (DecodeGreedy).
  static bool PlainGreedy(const Sequence& s);
  // The next token of `s` (its sampler only: safe to run for different sequences at once).
  StatusOr<TokenChoice> Choose(Sequence& s, const float* logits) const;
  // Records the chosen token: counts, text, finish checks, the event.
  Status Advance(Sequence& s, TokenChoice&& choice);

  const std::unique_ptr<SequenceBackend> backend_;
  const std::shared_ptr<const Tokenizer> tokenizer_;
  const ServingOptions options_;
  const int64_t vocab_;

  mutable std::mutex mu_;  // guards the fields down to `stats_`
  std::condition_variable wake_;
  bool stopping_ = false;
  std::deque<std::shared_ptr<Call>> waiting_;
  std::map<std::string, std::shared_ptr<Call>> calls_;  // every live call, by id
  std::vector<std::string> cancel_requests_;
  ServingStats stats_;
  StepObserver step_observer_;

  // Loop-thread only.
  std::vector<std::shared_ptr<Call>> admitted_;  // calls holding slots, in admission order
  std::vector<int32_t> free_slots_;
  std::vector<int32_t> step_slots_, step_ids_;
  std::vector<float> logits_;  // [max_batch, V]
  std::thread thread_;
};

}  // namespace mq::serve
