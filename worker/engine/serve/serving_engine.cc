#include "serve/serving_engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <utility>

#include "cpu/parallel_for.h"
#include "serve/sequence_state.h"
#include "serve/text_stream.h"
#include "tokenizer/bpe_tokenizer.h"

namespace mq::serve {
namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }


}  // namespace

Status ValidateServingOptions(const ServingOptions& o) {
  MQ_RETURN_IF_ERROR(ValidateBackendOptions(o.backend));
  if (o.max_waiting < 0 || o.max_waiting > 1000000) return InvalidArgumentError("max waiting calls must be in [0, 1000000]");
  if (o.max_prompt_tokens < 1 || o.max_prompt_tokens > (1 << 20)) return InvalidArgumentError("max prompt tokens must be in [1, 1048576]");
  if (o.max_new_tokens < 1 || o.max_new_tokens > GenerationLimits::kMaxNewTokens)
    return InvalidArgumentError("max new tokens must be in [1, " + std::to_string(GenerationLimits::kMaxNewTokens) + "]");
  if (o.max_score_tokens < 2 || o.max_score_tokens > (1 << 20)) return InvalidArgumentError("max score tokens must be in [2, 1048576]");
  return OkStatus();
}

struct ServingEngine::Sequence {
  Call* call = nullptr;
  int32_t index = 0;
  SequenceState state = SequenceState::kWaiting;
  int32_t slot = -1;
  std::unique_ptr<TokenSampler> sampler;
  std::unique_ptr<TextStream> text;
  int32_t next_input = 0;  // the token the next decode step feeds
  int32_t generated = 0;
  bool first_sent = false;

  void Move(SequenceState to) {
    // An impossible transition is a bug of this file, not bad input: fail loudly.
    if (!CanTransition(state, to)) {
      std::fprintf(stderr, "serving loop: sequence %s -> %s is not a transition\n", SequenceStateName(state), SequenceStateName(to));
      std::abort();
    }
    state = to;
  }
};

struct ServingEngine::Call {
  std::string id;
  bool score = false;
  GenerationInput gen;
  ScoreInput sc;
  std::vector<int32_t> prompt;  // token ids (the scored tokens for Score)
  GenerationSink on_event;
  ErrorSink on_error;
  ScoreSink on_score;
  std::vector<Sequence> seqs;   // one per completion; Score uses seqs[0] for its slot
  int64_t prefilled = 0;        // prompt tokens run so far
  uint64_t seed = 0;
  Clock::time_point submitted = Clock::now();
  double queue_seconds = 0;
  int32_t finished = 0;         // completions finished
  bool over = false;            // ended (finished, cancelled or failed); slots released
  std::vector<float> prompt_logits;  // [V] when asked for, until the first event takes them
  ScoreResult result;           // Score: accumulated
  double nll_sum = 0;
};

ServingEngine::ServingEngine(std::unique_ptr<SequenceBackend> backend, std::shared_ptr<const Tokenizer> tokenizer,
                             const ServingOptions& options)
    : backend_(std::move(backend)), tokenizer_(std::move(tokenizer)), options_(options),
      vocab_(backend_->config().vocab_size) {}

StatusOr<std::unique_ptr<ServingEngine>> ServingEngine::Create(std::unique_ptr<SequenceBackend> backend,
                                                               std::shared_ptr<const Tokenizer> tokenizer,
                                                               const ServingOptions& options) {
  if (backend == nullptr || tokenizer == nullptr) return InvalidArgumentError("a backend and a tokenizer are required");
  MQ_RETURN_IF_ERROR(ValidateServingOptions(options));
  const SequenceBackendOptions& bo = backend->options();
  if (bo.num_slots != options.backend.num_slots || bo.max_batch != options.backend.max_batch ||
      bo.max_prefill_tokens != options.backend.max_prefill_tokens || bo.max_logit_rows != options.backend.max_logit_rows)
    return InvalidArgumentError("the backend was created with other sizes than the serving options");
  std::unique_ptr<ServingEngine> e(new ServingEngine(std::move(backend), std::move(tokenizer), options));
  const size_t V = static_cast<size_t>(e->vocab_);
  e->logits_.assign(static_cast<size_t>(std::max(bo.max_batch, bo.max_logit_rows)) * V, 0.0f);
  for (int32_t s = bo.num_slots - 1; s >= 0; --s) e->free_slots_.push_back(s);  // lowest slot first
  e->step_slots_.reserve(static_cast<size_t>(bo.max_batch));
  e->step_ids_.reserve(static_cast<size_t>(bo.max_batch));
  e->stats_.free_slots = bo.num_slots;
  e->thread_ = std::thread([p = e.get()] { p->Loop(); });
  return e;
}

ServingEngine::~ServingEngine() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  const Status gone = CancelledError("the model was unloaded");
  for (auto& c : admitted_) FailCall(*c, gone);
  std::deque<std::shared_ptr<Call>> waiting;
  {
    std::lock_guard<std::mutex> l(mu_);
    waiting.swap(waiting_);
  }
  for (auto& c : waiting) FailCall(*c, gone);
}

StatusOr<std::vector<int32_t>> ServingEngine::TokensOf(bool has_text, const std::string& text,
                                                      const std::vector<int32_t>& ids, int32_t limit,
                                                      const std::string& what) const {
  std::vector<int32_t> tokens;
  if (has_text) {
    if (static_cast<int64_t>(text.size()) > int64_t{limit} * GenerationLimits::kMaxTextBytesPerToken)
      return InvalidArgumentError("the " + what + " is " + std::to_string(text.size()) + " bytes, over the limit of " +
                                  std::to_string(limit) + " " + what + " tokens");
    MQ_ASSIGN_OR_RETURN(tokens, tokenizer_->Encode(text));
  } else {
    for (int32_t id : ids)
      if (id < 0 || id >= vocab_)
        return InvalidArgumentError(what + " token id " + std::to_string(id) + " out of range [0, " + std::to_string(vocab_) + ")");
    tokens = ids;
  }
  if (static_cast<int64_t>(tokens.size()) > limit)
    return InvalidArgumentError("the " + what + " has " + std::to_string(tokens.size()) + " tokens, over the limit of " +
                                std::to_string(limit) + " " + what + " tokens");
  return tokens;
}

Status ServingEngine::Enqueue(std::shared_ptr<Call> call) {
  for (auto& s : call->seqs) s.call = call.get();
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return UnavailableError("the model is being unloaded");
    if (calls_.count(call->id) != 0) return AlreadyExistsError("call " + call->id + " is already running");
    if (QueueFull()) return ResourceExhaustedError("the waiting queue of this model is full (" +
                                                   std::to_string(options_.max_waiting) + " calls): retry later");
    stats_.waiting += static_cast<int32_t>(call->seqs.size());
    calls_[call->id] = call;
    waiting_.push_back(std::move(call));
  }
  wake_.notify_all();
  return OkStatus();
}

Status ServingEngine::SubmitGenerate(const std::string& call_id, GenerationInput input, GenerationSink on_event,
                                     ErrorSink on_error) {
  MQ_RETURN_IF_ERROR(ValidateGenerationParams(input.params));
  MQ_RETURN_IF_ERROR(ValidateForModel(input.params, vocab_));
  if (input.params.max_new_tokens > options_.max_new_tokens)
    return InvalidArgumentError("max_new_tokens " + std::to_string(input.params.max_new_tokens) +
                                " is over this worker's limit of " + std::to_string(options_.max_new_tokens));
  if (input.params.n > options_.backend.num_slots)
    return InvalidArgumentError("n = " + std::to_string(input.params.n) + " completions need more state slots than this worker has (" +
                                std::to_string(options_.backend.num_slots) + ")");
  auto call = std::make_shared<Call>();
  call->id = call_id;
  MQ_ASSIGN_OR_RETURN(call->prompt, TokensOf(input.has_text, input.prompt_text, input.prompt_ids, options_.max_prompt_tokens, "prompt"));
  if (call->prompt.empty()) return InvalidArgumentError("the prompt is empty (it encodes to no tokens)");
  call->seed = input.seed_given ? input.params.sampling.seed : std::random_device{}();
  call->seqs.resize(static_cast<size_t>(input.params.n));
  for (int32_t i = 0; i < input.params.n; ++i) {
    Sequence& s = call->seqs[static_cast<size_t>(i)];
    s.index = i;
    s.sampler = std::make_unique<TokenSampler>(input.params.sampling, call->seed + static_cast<uint64_t>(i), vocab_, call->prompt);
    s.text = std::make_unique<TextStream>(tokenizer_.get(), input.params.stop);
  }
  call->gen = std::move(input);
  call->on_event = std::move(on_event);
  call->on_error = std::move(on_error);
  return Enqueue(std::move(call));
}

Status ServingEngine::SubmitScore(const std::string& call_id, ScoreInput input, ScoreSink on_result) {
  if (input.top_logprobs < 0 || input.top_logprobs > GenerationLimits::kMaxLogprobs)
    return InvalidArgumentError("top_logprobs must be in [0, " + std::to_string(GenerationLimits::kMaxLogprobs) + "], got " +
                                std::to_string(input.top_logprobs));
  auto call = std::make_shared<Call>();
  call->id = call_id;
  call->score = true;
  MQ_ASSIGN_OR_RETURN(call->prompt, TokensOf(input.has_text, input.text, input.ids, options_.max_score_tokens, "scored text"));
  if (call->prompt.size() < 2) return InvalidArgumentError("scoring needs at least 2 tokens, the text has " + std::to_string(call->prompt.size()));
  call->sc = std::move(input);
  call->on_score = std::move(on_result);
  call->seqs.resize(1);
  call->result.token_ids = call->prompt;
  return Enqueue(std::move(call));
}

bool ServingEngine::QueueFull() const {
  // Calls that free slots can take at once do not count against the queue: they sit in it only
  // until the loop's next iteration (so max_waiting 0 means "no queue", not "refuse everything").
  const int32_t can_start = std::max(0, stats_.free_slots - stats_.waiting);
  return static_cast<int32_t>(waiting_.size()) >= options_.max_waiting + can_start;
}

void ServingEngine::Cancel(const std::string& call_id) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (calls_.count(call_id) == 0) return;
    cancel_requests_.push_back(call_id);
  }
  wake_.notify_all();
}

ServingStats ServingEngine::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return stats_;
}

void ServingEngine::SetStepObserver(StepObserver observer) {
  std::lock_guard<std::mutex> l(mu_);
  step_observer_ = std::move(observer);
}

void ServingEngine::Loop() {
  for (;;) {
    {
      std::unique_lock<std::mutex> l(mu_);
      wake_.wait(l, [&] {
        return stopping_ || !cancel_requests_.empty() || !admitted_.empty() ||
               (!waiting_.empty() && static_cast<int32_t>(free_slots_.size()) >= static_cast<int32_t>(waiting_.front()->seqs.size()));
      });
      if (stopping_) return;
    }
    DropCancelled();
    AdmitWaiting();
    PrefillOne();
    // A Cancel made meanwhile (e.g. by a sink at a call's first token) takes effect before the
    // decode step, as Cancel promises.
    DropCancelled();
    DecodeStep();
    // Calls that ended leave the admitted list and the registry of live calls.
    std::vector<std::string> ended;
    admitted_.erase(std::remove_if(admitted_.begin(), admitted_.end(),
                                   [&](const std::shared_ptr<Call>& c) {
                                     if (c->over) ended.push_back(c->id);
                                     return c->over;
                                   }),
                    admitted_.end());
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& id : ended) calls_.erase(id);
    int32_t running = 0;
    // A slot, not the state: completions 1..n−1 hold theirs (kWaiting) while completion 0 prefills.
    for (const auto& c : admitted_)
      for (const auto& s : c->seqs) running += s.slot >= 0 ? 1 : 0;
    stats_.running = running;
    stats_.free_slots = static_cast<int32_t>(free_slots_.size());
  }
}

void ServingEngine::DropCancelled() {
  std::vector<std::string> ids;
  std::vector<std::shared_ptr<Call>> dropped_waiting;
  {
    std::lock_guard<std::mutex> l(mu_);
    ids.swap(cancel_requests_);
    for (const auto& id : ids) {
      auto it = std::find_if(waiting_.begin(), waiting_.end(), [&](const auto& c) { return c->id == id; });
      if (it != waiting_.end()) {
        stats_.waiting -= static_cast<int32_t>((*it)->seqs.size());
        dropped_waiting.push_back(*it);
        calls_.erase(id);
        waiting_.erase(it);
      }
    }
  }
  const Status cancelled = CancelledError("the call was cancelled");
  for (auto& c : dropped_waiting) FailCall(*c, cancelled);
  for (const auto& id : ids)
    for (auto& c : admitted_)
      if (c->id == id && !c->over) FailCall(*c, cancelled);
}

void ServingEngine::AdmitWaiting() {
  for (;;) {
    std::shared_ptr<Call> call;
    {
      std::lock_guard<std::mutex> l(mu_);
      if (waiting_.empty() || free_slots_.size() < waiting_.front()->seqs.size()) return;
      call = waiting_.front();
      waiting_.pop_front();
      stats_.waiting -= static_cast<int32_t>(call->seqs.size());
    }
    call->queue_seconds = SecondsSince(call->submitted);
    for (auto& s : call->seqs) {
      s.slot = free_slots_.back();
      free_slots_.pop_back();
    }
    Sequence& first = call->seqs[0];
    first.Move(SequenceState::kPrefilling);
    Status st = backend_->ResetSlot(first.slot);
    admitted_.push_back(call);
    if (!st.ok()) FailCall(*call, st);
  }
}

bool ServingEngine::PrefillOne() {
  for (auto& cp : admitted_) {
    Call& call = *cp;
    if (call.over || call.seqs[0].state != SequenceState::kPrefilling) continue;
    const int64_t total = static_cast<int64_t>(call.prompt.size());
    // Score needs every position's logits, so its chunk is the logit-row limit; the last chunk of
    // a generation needs the last position's only.
    const int64_t chunk = call.score ? options_.backend.max_logit_rows : options_.backend.max_prefill_tokens;
    const int64_t n = std::min(chunk, total - call.prefilled);
    const int32_t* ids = call.prompt.data() + call.prefilled;
    const bool last = call.prefilled + n == total;
    const size_t V = static_cast<size_t>(vocab_);
    Status st;
    if (call.score) {
      st = backend_->Prefill(call.seqs[0].slot, ids, n, nullptr, logits_.data());
      if (st.ok()) {
        // Row i predicts prompt[prefilled + i + 1]; the text's last position predicts nothing.
        const int64_t rows = last ? n - 1 : n;
        for (int64_t i = 0; i < rows; ++i) {
          const int32_t target = call.prompt[static_cast<size_t>(call.prefilled + i + 1)];
          TokenChoice c = LogprobsAt(logits_.data() + static_cast<size_t>(i) * V, vocab_, target, call.sc.top_logprobs);
          call.nll_sum -= static_cast<double>(c.logprob);
          call.result.logprobs.push_back(std::move(c));
        }
      }
    } else {
      // Other prompts with at least n tokens left join this chunk (one forward on the GPU), up to
      // the chunk's token budget and the decode batch.
      std::vector<Call*> group = {&call};
      for (auto& other : admitted_) {
        Call& o = *other;
        if (&o == &call || o.over || o.score || o.seqs[0].state != SequenceState::kPrefilling) continue;
        if (static_cast<int64_t>(o.prompt.size()) - o.prefilled < n) continue;
        if (static_cast<int64_t>(group.size() + 1) * n > options_.backend.max_prefill_tokens ||
            static_cast<int64_t>(group.size()) + 1 > options_.backend.max_batch)
          break;
        group.push_back(&o);
      }
      if (group.size() > 1) {
        PrefillGroup(group, n);
        return true;
      }
      st = backend_->Prefill(call.seqs[0].slot, ids, n, last ? logits_.data() : nullptr, nullptr);
    }
    if (!st.ok()) {
      FailCall(call, st);
      return true;
    }
    call.prefilled += n;
    if (!last) return true;
    if (call.score) {
      const double count = static_cast<double>(call.result.logprobs.size());
      call.result.mean_nll = call.nll_sum / count;
      call.result.perplexity = std::exp(call.result.mean_nll);
      call.seqs[0].Move(SequenceState::kFinished);
      ReleaseCallSlots(call);
      call.over = true;
      call.on_score(std::move(call.result));
      return true;
    }
    std::vector<float> last_logits(logits_.begin(), logits_.begin() + static_cast<std::ptrdiff_t>(V));
    if (call.gen.return_prompt_logits) call.prompt_logits = last_logits;
    st = StartCompletions(call, last_logits);
    if (!st.ok()) FailCall(call, st);
    return true;
  }
  return false;
}

void ServingEngine::PrefillGroup(const std::vector<Call*>& group, int64_t n) {
  const size_t V = static_cast<size_t>(vocab_);
  std::vector<int32_t> slots, ids;
  for (Call* c : group) {
    slots.push_back(c->seqs[0].slot);
    ids.insert(ids.end(), c->prompt.begin() + c->prefilled, c->prompt.begin() + c->prefilled + n);
  }
  const Status st = backend_->PrefillBatch(slots.data(), ids.data(), static_cast<int64_t>(group.size()), n, logits_.data());
  for (size_t r = 0; r < group.size(); ++r) {
    Call& call = *group[r];
    if (!st.ok()) {
      FailCall(call, st);
      continue;
    }
    call.prefilled += n;
    if (call.prefilled < static_cast<int64_t>(call.prompt.size())) continue;
    std::vector<float> last_logits(logits_.begin() + static_cast<std::ptrdiff_t>(r * V),
                                   logits_.begin() + static_cast<std::ptrdiff_t>((r + 1) * V));
    if (call.gen.return_prompt_logits) call.prompt_logits = last_logits;
    const Status started = StartCompletions(call, last_logits);
    if (!started.ok()) FailCall(call, started);
  }
}

Status ServingEngine::StartCompletions(Call& call, const std::vector<float>& last_logits) {
  // Completions 1..n−1 start from a copy of the prompt's state: one prefill serves them all.
  for (size_t i = 1; i < call.seqs.size(); ++i) MQ_RETURN_IF_ERROR(backend_->CopySlot(call.seqs[0].slot, call.seqs[i].slot));
  for (auto& s : call.seqs) {
    // A sink that reported its client gone at an earlier completion's first token ended the call:
    // its sequences are terminal now and must not move again.
    if (call.over) break;
    s.Move(SequenceState::kDecoding);
    MQ_RETURN_IF_ERROR(SampleAndAdvance(s, last_logits.data()));
  }
  return OkStatus();
}

void ServingEngine::DecodeStep() {
  std::vector<Sequence*> batch;
  for (auto& c : admitted_)
    if (!c->over)
      for (auto& s : c->seqs)
        if (s.state == SequenceState::kDecoding) batch.push_back(&s);
  const size_t V = static_cast<size_t>(vocab_);
  const size_t max_batch = static_cast<size_t>(options_.backend.max_batch);
  for (size_t begin = 0; begin < batch.size(); begin += max_batch) {
    const size_t end = std::min(batch.size(), begin + max_batch);
    step_slots_.clear();
    step_ids_.clear();
    for (size_t i = begin; i < end; ++i) {
      step_slots_.push_back(batch[i]->slot);
      step_ids_.push_back(batch[i]->next_input);
    }
    const int64_t B = static_cast<int64_t>(end - begin);
    const auto t0 = Clock::now();
    // A step whose sequences are all plain greedy lets the device pick (B ids come back instead
    // of B·V logits); any other step brings the logits to the samplers.
    const bool plain_greedy = std::all_of(batch.begin() + static_cast<std::ptrdiff_t>(begin),
                                          batch.begin() + static_cast<std::ptrdiff_t>(end),
                                          [](const Sequence* s) { return PlainGreedy(*s); });
    float* logits = backend_->decode_logits_buffer() != nullptr ? backend_->decode_logits_buffer() : logits_.data();
    std::vector<int32_t> next;
    Status st;
    if (plain_greedy) {
      next.resize(static_cast<size_t>(B));
      st = backend_->DecodeGreedy(step_slots_.data(), step_ids_.data(), B, next.data());
    } else {
      st = backend_->Decode(step_slots_.data(), step_ids_.data(), B, logits);
    }
    const double seconds = SecondsSince(t0);
    if (!st.ok()) {
      for (size_t i = begin; i < end; ++i)
        if (!batch[i]->call->over) FailCall(*batch[i]->call, st);
      continue;
    }
    StepObserver observer;
    {
      std::lock_guard<std::mutex> l(mu_);
      stats_.decode_steps += 1;
      observer = step_observer_;
    }
    if (observer) observer(B, seconds);
    // Choosing is per sequence and independent (each owns its sampler): on all cores for large
    // batches (a 50k-vocabulary row costs tens of microseconds), then the events in order.
    std::vector<std::optional<StatusOr<TokenChoice>>> choices(end - begin);
    if (plain_greedy) {
      for (int64_t r = 0; r < B; ++r) {
        const int32_t token = next[static_cast<size_t>(r)];
        if (token < 0) {
          choices[static_cast<size_t>(r)].emplace(InternalError("non-finite logits: no token to choose"));
          continue;
        }
        batch[begin + static_cast<size_t>(r)]->sampler->Accept(token);
        TokenChoice c;
        c.token = token;
        choices[static_cast<size_t>(r)].emplace(std::move(c));
      }
    } else {
      cpu::ParallelFor(B, 8, [&](int64_t r0, int64_t r1) {
        for (int64_t r = r0; r < r1; ++r) {
          Sequence& s = *batch[begin + static_cast<size_t>(r)];
          choices[static_cast<size_t>(r)].emplace(Choose(s, logits + static_cast<size_t>(r) * V));
        }
      });
    }
    for (size_t i = begin; i < end; ++i) {
      Sequence& s = *batch[i];
      if (s.call->over || s.state != SequenceState::kDecoding) continue;
      StatusOr<TokenChoice>& choice = *choices[i - begin];
      st = choice.ok() ? Advance(s, std::move(*choice)) : choice.status();
      if (!st.ok()) FailCall(*s.call, st);
    }
  }
}

bool ServingEngine::PlainGreedy(const Sequence& s) {
  const GenerationParams& p = s.call->gen.params;
  const SamplingParams& q = p.sampling;
  return q.temperature == 0.0f && q.repetition_penalty == 1.0f && q.presence_penalty == 0.0f &&
         q.frequency_penalty == 0.0f && !p.logprobs && s.generated >= p.min_tokens;
}

StatusOr<TokenChoice> ServingEngine::Choose(Sequence& s, const float* logits) const {
  const GenerationParams& p = s.call->gen.params;
  // Before min_tokens, nothing that would end the completion may be chosen.
  std::vector<int32_t> banned;
  if (s.generated < p.min_tokens) {
    if (!p.ignore_eos) banned.push_back(static_cast<int32_t>(backend_->config().eos_token_id));
    banned.insert(banned.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
  }
  return s.sampler->Next(logits, banned, p.logprobs ? *p.logprobs : -1);
}

Status ServingEngine::SampleAndAdvance(Sequence& s, const float* logits) {
  MQ_ASSIGN_OR_RETURN(TokenChoice choice, Choose(s, logits));
  return Advance(s, std::move(choice));
}

Status ServingEngine::Advance(Sequence& s, TokenChoice&& choice) {
  Call& call = *s.call;
  const GenerationParams& p = call.gen.params;
  const int32_t eos = static_cast<int32_t>(backend_->config().eos_token_id);
  const int32_t token = choice.token;
  s.generated += 1;
  {
    std::lock_guard<std::mutex> l(mu_);
    stats_.generated_tokens += 1;
  }

  GenerationEvent e;
  e.index = s.index;
  e.token_ids.push_back(token);
  if (p.logprobs) e.logprobs.push_back(std::move(choice));
  std::string reason;
  const bool eos_hit = token == eos && !p.ignore_eos;
  const bool stop_token = std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), token) != p.stop_token_ids.end();
  if (eos_hit || stop_token) {
    // The ending token's own text is not part of the completion (as vLLM without
    // include_stop_str_in_output).
    reason = eos_hit ? "eos" : "stop";
    e.text = s.text->Finish();
  } else {
    bool stopped = false;
    MQ_ASSIGN_OR_RETURN(e.text, s.text->Append(token, &stopped));
    if (stopped) {
      reason = "stop";
      e.stop_string = s.text->matched_stop();
    } else if (s.generated >= p.max_new_tokens) {
      reason = "length";
      e.text += s.text->Finish();
    }
  }
  s.next_input = token;
  if (!reason.empty()) {
    e.finish_reason = reason;
    e.prompt_tokens = static_cast<int32_t>(call.prompt.size());
    e.completion_tokens = s.generated;
    s.Move(SequenceState::kFinished);
    free_slots_.push_back(s.slot);
    s.slot = -1;
    call.finished += 1;
    if (call.finished == static_cast<int32_t>(call.seqs.size())) {
      e.call_done = true;
      call.over = true;
    }
  }
  return Emit(s, std::move(e));
}

Status ServingEngine::Emit(Sequence& s, GenerationEvent&& e) {
  Call& call = *s.call;
  if (!s.first_sent) {
    e.first = true;
    e.seed = call.seed + static_cast<uint64_t>(s.index);
    e.queue_seconds = call.queue_seconds;
    if (s.index == 0) e.prompt_logits = std::move(call.prompt_logits);
    s.first_sent = true;
  }
  if (!call.on_event(std::move(e)) && !call.over) {
    // The client is gone: drop the call like a Cancel.
    FailCall(call, CancelledError("the client went away"));
  }
  return OkStatus();
}

void ServingEngine::ReleaseCallSlots(Call& call) {
  for (auto& s : call.seqs) {
    if (s.slot >= 0) free_slots_.push_back(s.slot);
    s.slot = -1;
  }
}

void ServingEngine::FailCall(Call& call, const Status& status) {
  if (call.over) return;
  const SequenceState end = status.code() == StatusCode::kCancelled ? SequenceState::kCancelled : SequenceState::kFailed;
  for (auto& s : call.seqs)
    if (!IsTerminal(s.state)) s.Move(end);
  ReleaseCallSlots(call);
  call.over = true;
  if (call.score) {
    if (call.on_score) call.on_score(StatusOr<ScoreResult>(status));
  } else if (call.on_error) {
    call.on_error(status);
  }
}

}  // namespace mq::serve
