// The continuous-batching serving loop (serve/serving_engine.h) on the CPU reference backend and
// the bundled mamba-tiny: what a call returns through the engine equals the reference generation
// (mq::Generate, transformers' greedy ids, the CPU forward's logits), whatever else runs beside it,
// however its prompt is chunked, and whatever is cancelled around it; stop strings, min_tokens,
// stop ids, limits, Score, prompt logits, and shutdown with calls in flight.
//
// Sinks run on the loop thread: the Recorder collects events under a mutex and signals a
// condition variable; tests wait on it with a deadline, never by sleeping blindly.
#include "serve/serving_engine.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cpu/mamba_forward.h"
#include "eval/generation.h"
#include "eval/sampling.h"
#include "io/safetensors.h"
#include "model/mamba_weights.h"
#include "serve/cpu_sequence_backend.h"
#include "serve/generation_params.h"
#include "test_paths.h"
#include "test_util.h"
#include "tokenizer/bpe_tokenizer.h"

namespace mq::serve {
namespace {

using namespace std::chrono_literals;

constexpr auto kTimeout = 30s;  // per wait; a healthy run takes milliseconds
constexpr int32_t kEos = 0;     // mamba-tiny's eos_token_id

std::string ModelDir() { return ::mq::testing::RepoPath("models/mamba-tiny"); }

// Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF), written here
// independently of tokenizer/utf8.h.
bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    size_t len;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      len = 2, cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
      len = 3, cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
      len = 4, cp = c & 0x07;
    } else {
      return false;
    }
    if (i + len > s.size()) return false;
    for (size_t k = 1; k < len; ++k) {
      const auto d = static_cast<uint8_t>(s[i + k]);
      if ((d & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (d & 0x3F);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF))
      return false;
    i += len;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// Event collection.

struct Completion {
  std::vector<int32_t> ids;
  std::string text;
  std::vector<std::string> deltas;  // each event's text
  std::vector<TokenChoice> logprobs;
  std::string finish_reason, stop_string;
  int32_t prompt_tokens = -1, completion_tokens = -1;
  uint64_t seed = 0;
  int events = 0;
  bool first_seen = false;
  bool finished = false;
  std::vector<float> prompt_logits;
  int prompt_logits_events = 0;  // events that carried prompt logits
};

struct CallLog {
  std::vector<Completion> completions;  // by event index
  int events = 0;
  int done_events = 0;  // events with call_done
  int errors = 0;       // ErrorSink calls
  std::optional<Status> error;
  bool event_after_end = false;   // an event after the call or its completion ended
  bool invalid_utf8 = false;      // a text delta that is not valid UTF-8
  bool bad_first_flag = false;    // `first` set on other than a completion's first event
  bool bad_index = false;
  bool ended() const { return done_events > 0 || errors > 0; }
};

// Hook run on the loop thread after an event was recorded (outside the recorder's lock); its
// result is the sink's (false: the client is gone). `count` is the call's events so far.
using EventHook = std::function<bool(const GenerationEvent& e, int count)>;

class Recorder {
 public:
  GenerationSink Sink(const std::string& id, EventHook hook = nullptr) {
    {
      std::lock_guard<std::mutex> l(mu_);
      calls_[id];
    }
    return [this, id, hook](GenerationEvent&& e) -> bool {
      int count = 0;
      {
        std::lock_guard<std::mutex> l(mu_);
        CallLog& c = calls_[id];
        if (c.ended()) c.event_after_end = true;
        count = ++c.events;
        if (e.index < 0 || e.index >= GenerationLimits::kMaxCompletions) {
          c.bad_index = true;
        } else {
          if (c.completions.size() <= static_cast<size_t>(e.index)) c.completions.resize(static_cast<size_t>(e.index) + 1);
          Completion& k = c.completions[static_cast<size_t>(e.index)];
          if (k.finished) c.event_after_end = true;
          if (e.first == k.first_seen) c.bad_first_flag = true;
          if (e.first) {
            k.first_seen = true;
            k.seed = e.seed;
          }
          if (!e.prompt_logits.empty()) {
            k.prompt_logits = e.prompt_logits;
            k.prompt_logits_events += 1;
          }
          if (!ValidUtf8(e.text)) c.invalid_utf8 = true;
          k.events += 1;
          k.ids.insert(k.ids.end(), e.token_ids.begin(), e.token_ids.end());
          k.text += e.text;
          k.deltas.push_back(e.text);
          k.logprobs.insert(k.logprobs.end(), e.logprobs.begin(), e.logprobs.end());
          if (!e.finish_reason.empty()) {
            k.finished = true;
            k.finish_reason = e.finish_reason;
            k.stop_string = e.stop_string;
            k.prompt_tokens = e.prompt_tokens;
            k.completion_tokens = e.completion_tokens;
          }
        }
        if (e.call_done) c.done_events += 1;
      }
      const bool keep = hook ? hook(e, count) : true;
      cv_.notify_all();
      return keep;
    };
  }

  ErrorSink Errors(const std::string& id) {
    return [this, id](const Status& st) {
      {
        std::lock_guard<std::mutex> l(mu_);
        CallLog& c = calls_[id];
        c.errors += 1;
        c.error = st;
      }
      cv_.notify_all();
    };
  }

  ScoreSink Score(const std::string& id) {
    return [this, id](StatusOr<ScoreResult>&& r) {
      {
        std::lock_guard<std::mutex> l(mu_);
        scores_[id].push_back(std::move(r));
      }
      cv_.notify_all();
    };
  }

  // Waits until every call in `ids` ended (call_done or an error); false on timeout.
  bool WaitEnded(const std::vector<std::string>& ids, std::chrono::seconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] {
      for (const auto& id : ids) {
        auto it = calls_.find(id);
        if (it == calls_.end() || !it->second.ended()) return false;
      }
      return true;
    });
  }
  // Waits until call `id` has at least `n` events (or ended).
  bool WaitEvents(const std::string& id, int n, std::chrono::seconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    return cv_.wait_for(l, timeout, [&] {
      auto it = calls_.find(id);
      return it != calls_.end() && (it->second.events >= n || it->second.ended());
    });
  }
  std::optional<StatusOr<ScoreResult>> WaitScore(const std::string& id, std::chrono::seconds timeout = kTimeout) {
    std::unique_lock<std::mutex> l(mu_);
    if (!cv_.wait_for(l, timeout, [&] { return !scores_[id].empty(); })) return std::nullopt;
    return scores_[id].front();
  }
  size_t ScoreResults(const std::string& id) {
    std::lock_guard<std::mutex> l(mu_);
    return scores_[id].size();
  }

  bool Ended(const std::string& id) {
    std::lock_guard<std::mutex> l(mu_);
    auto it = calls_.find(id);
    return it != calls_.end() && it->second.ended();
  }

  CallLog Get(const std::string& id) {
    std::lock_guard<std::mutex> l(mu_);
    return calls_[id];
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<std::string, CallLog> calls_;
  std::map<std::string, std::vector<StatusOr<ScoreResult>>> scores_;
};

// The invariants every call keeps, whatever happened to it.
void ExpectWellFormed(const CallLog& c, const std::string& what) {
  SCOPED_TRACE(what);
  EXPECT_FALSE(c.event_after_end) << "an event arrived after the call or its completion had ended";
  EXPECT_FALSE(c.invalid_utf8) << "a text delta is not valid UTF-8";
  EXPECT_FALSE(c.bad_first_flag) << "`first` must be set on exactly each completion's first event";
  EXPECT_FALSE(c.bad_index);
  EXPECT_LE(c.done_events, 1);
  EXPECT_LE(c.errors, 1) << "the ErrorSink was called more than once";
  EXPECT_FALSE(c.done_events > 0 && c.errors > 0) << "a call both finished and failed";
}

// ---------------------------------------------------------------------------------------------
// Fixture: the model's weights (for the reference paths) and tokenizer, loaded once.

class ServingEngineTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto tok = Tokenizer::LoadFromFile(ModelDir() + "/tokenizer.json");
    ASSERT_TRUE(tok.ok()) << tok.status().ToString();
    tokenizer_ = std::make_shared<const Tokenizer>(std::move(*tok));
    auto w = LoadMambaWeights(ModelDir());
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    weights_ = std::make_shared<const MambaWeights>(std::move(*w));
    ASSERT_EQ(weights_->config.eos_token_id, kEos);
  }
  static void TearDownTestSuite() {
    tokenizer_.reset();
    weights_.reset();
  }

  static ServingOptions Options(int32_t slots, int32_t max_batch = 0, int32_t prefill = 512, int32_t logit_rows = 0) {
    ServingOptions o;
    o.backend.num_slots = slots;
    o.backend.max_batch = max_batch > 0 ? max_batch : slots;
    o.backend.max_prefill_tokens = prefill;
    o.backend.max_logit_rows = logit_rows > 0 ? logit_rows : prefill;
    o.max_waiting = 1000;
    return o;
  }

  static std::unique_ptr<ServingEngine> MakeEngine(const ServingOptions& o) {
    auto backend = CpuSequenceBackend::Open(ModelDir(), o.backend);
    EXPECT_TRUE(backend.ok()) << backend.status().ToString();
    if (!backend.ok()) return nullptr;
    auto engine = ServingEngine::Create(std::move(*backend), tokenizer_, o);
    EXPECT_TRUE(engine.ok()) << engine.status().ToString();
    if (!engine.ok()) return nullptr;
    return std::move(*engine);
  }

  static const Tokenizer& tok() { return *tokenizer_; }
  static int64_t V() { return weights_->V(); }

  static std::vector<int32_t> Encode(const std::string& text) {
    auto ids = tokenizer_->Encode(text);
    EXPECT_TRUE(ids.ok()) << ids.status().ToString();
    return ids.ok() ? *ids : std::vector<int32_t>{};
  }
  static std::string Decode(const std::vector<int32_t>& ids) {
    auto t = tokenizer_->Decode(ids, /*skip_special_tokens=*/true);
    EXPECT_TRUE(t.ok()) << t.status().ToString();
    return t.ok() ? *t : std::string();
  }

  // mq::Generate's continuation of `prompt` (it stops after eos for a single row).
  static std::vector<int32_t> Reference(const std::vector<int32_t>& prompt, int64_t max_new, SamplingOptions so = {}) {
    GenerationOptions go;
    go.max_new_tokens = max_new;
    go.eos_id = kEos;
    go.sampling = so;
    auto out = Generate(*weights_, {prompt}, go);
    EXPECT_TRUE(out.ok()) << out.status().ToString();
    if (!out.ok()) return {};
    return std::vector<int32_t>((*out)[0].begin() + static_cast<std::ptrdiff_t>(prompt.size()), (*out)[0].end());
  }

  // Every position's logits [n, V] of a fresh sequence, from the CPU forward.
  static std::vector<float> ForwardLogits(const std::vector<int32_t>& ids) {
    cpu::MambaState state = cpu::MambaState::Zeros(weights_->config, 1);
    std::vector<float> logits;
    Status st = cpu::MambaForward(*weights_, ids.data(), 1, static_cast<int64_t>(ids.size()), &state, &logits);
    EXPECT_TRUE(st.ok()) << st.ToString();
    return logits;
  }

  static GenerationInput Text(const std::string& text, int32_t max_new = 32) {
    GenerationInput in;
    in.has_text = true;
    in.prompt_text = text;
    in.params.max_new_tokens = max_new;
    return in;
  }
  static GenerationInput Ids(const std::vector<int32_t>& ids, int32_t max_new = 32) {
    GenerationInput in;
    in.prompt_ids = ids;
    in.params.max_new_tokens = max_new;
    return in;
  }
  static GenerationInput Sampled(GenerationInput in, uint64_t seed, float t = 0.8f, int32_t top_k = 40, float top_p = 0.9f) {
    in.params.sampling.temperature = t;
    in.params.sampling.top_k = top_k;
    in.params.sampling.top_p = top_p;
    in.params.sampling.seed = seed;
    in.seed_given = true;
    return in;
  }

  std::string NextId() { return "call-" + std::to_string(next_id_++); }

  // Submits and waits for the call's end; the log of a call that could not be submitted is empty.
  CallLog Run(ServingEngine& engine, GenerationInput in, EventHook hook = nullptr) {
    const std::string id = NextId();
    Status st = engine.SubmitGenerate(id, std::move(in), recorder_.Sink(id, hook), recorder_.Errors(id));
    EXPECT_TRUE(st.ok()) << st.ToString();
    if (!st.ok()) return {};
    EXPECT_TRUE(recorder_.WaitEnded({id})) << "call " << id << " did not end";
    CallLog log = recorder_.Get(id);
    ExpectWellFormed(log, id);
    return log;
  }
  // A call of n = 1 that finished normally: its only completion.
  Completion RunOne(ServingEngine& engine, GenerationInput in) {
    CallLog log = Run(engine, std::move(in));
    EXPECT_EQ(log.errors, 0) << (log.error ? log.error->ToString() : "");
    EXPECT_EQ(log.done_events, 1);
    EXPECT_EQ(log.completions.size(), 1u);
    return log.completions.empty() ? Completion{} : log.completions[0];
  }

  // Polls stats() until `pred` holds (the loop publishes them at the end of its iteration, just
  // after the sinks ran), with a deadline.
  static bool WaitStats(const ServingEngine& e, const std::function<bool(const ServingStats&)>& pred) {
    const auto deadline = std::chrono::steady_clock::now() + kTimeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (pred(e.stats())) return true;
      std::this_thread::sleep_for(1ms);
    }
    return pred(e.stats());
  }
  static bool Idle(const ServingEngine& e) {
    const int32_t slots = e.options().backend.num_slots;
    return WaitStats(e, [slots](const ServingStats& s) { return s.running == 0 && s.waiting == 0 && s.free_slots == slots; });
  }

  // Token-id prompts of the evaluation text (ordinary English, as the model was trained on).
  static std::vector<int32_t> EvalSlice(size_t offset, size_t len) {
    static const std::vector<int32_t> tokens = ::mq::testing::EvalTextTokens(ModelDir(), kEos);
    EXPECT_GE(tokens.size(), offset + len);
    if (tokens.size() < offset + len) return {};
    return std::vector<int32_t>(tokens.begin() + static_cast<std::ptrdiff_t>(offset),
                                tokens.begin() + static_cast<std::ptrdiff_t>(offset + len));
  }

  static std::shared_ptr<const Tokenizer> tokenizer_;
  static std::shared_ptr<const MambaWeights> weights_;
  Status dup_status_;  // written by a sink (loop thread), read after the call ended
  Recorder recorder_;  // declared before any engine a test makes: it outlives them
  int next_id_ = 0;
};

std::shared_ptr<const Tokenizer> ServingEngineTest::tokenizer_;
std::shared_ptr<const MambaWeights> ServingEngineTest::weights_;

// Expects an engine-made completion of a greedy call to be `expected` (mq::Generate's ids).
void ExpectGreedyCompletion(const Completion& c, const std::vector<int32_t>& expected, int32_t max_new,
                            size_t prompt_tokens, const std::string& decoded, const std::string& what) {
  SCOPED_TRACE(what);
  ASSERT_FALSE(expected.empty());
  EXPECT_EQ(c.ids, expected);
  if (expected.back() == kEos) {
    EXPECT_EQ(c.finish_reason, "eos");
  } else {
    EXPECT_EQ(static_cast<int32_t>(expected.size()), max_new);
    EXPECT_EQ(c.finish_reason, "length");
  }
  EXPECT_EQ(c.text, decoded);
  EXPECT_EQ(c.prompt_tokens, static_cast<int32_t>(prompt_tokens));
  EXPECT_EQ(c.completion_tokens, static_cast<int32_t>(c.ids.size()));
  EXPECT_TRUE(c.stop_string.empty());
}

// ---------------------------------------------------------------------------------------------
// 1. Greedy generation equals the reference paths.

TEST_F(ServingEngineTest, GreedyEqualsGenerateForTextAndIdPrompts) {
  auto engine = MakeEngine(Options(4));
  ASSERT_NE(engine, nullptr);
  const std::vector<std::string> texts = {"The quick brown fox", "Once upon a time, there was", "a",
                                          "In the broad and final sense", "Q:", "Hello, world! 123"};
  std::mt19937 rng(5);
  std::vector<std::vector<int32_t>> id_prompts = {{42}, EvalSlice(0, 12), EvalSlice(100, 27)};
  std::vector<int32_t> random_ids(10);
  for (auto& x : random_ids) x = static_cast<int32_t>(2 + rng() % static_cast<uint32_t>(V() - 2));
  id_prompts.push_back(random_ids);

  int eos_ends = 0, length_ends = 0;
  for (const auto& t : texts) {
    const std::vector<int32_t> prompt = Encode(t);
    const std::vector<int32_t> want = Reference(prompt, 32);
    Completion c = RunOne(*engine, Text(t, 32));
    ExpectGreedyCompletion(c, want, 32, prompt.size(), Decode(want), "text prompt \"" + t + "\"");
    (want.back() == kEos ? eos_ends : length_ends) += 1;
  }
  for (size_t i = 0; i < id_prompts.size(); ++i) {
    const std::vector<int32_t> want = Reference(id_prompts[i], 32);
    Completion c = RunOne(*engine, Ids(id_prompts[i], 32));
    ExpectGreedyCompletion(c, want, 32, id_prompts[i].size(), Decode(want), "id prompt " + std::to_string(i));
    (want.back() == kEos ? eos_ends : length_ends) += 1;
  }
  // Both ends were exercised ("Q:" repeats a token to the length limit, the others stop at eos).
  EXPECT_GT(eos_ends, 0);
  EXPECT_GT(length_ends, 0);
  EXPECT_TRUE(Idle(*engine));
}

TEST_F(ServingEngineTest, GreedyEqualsTransformersReference) {
  auto ref = SafetensorsFile::Open(::mq::testing::Fixture("tiny").reference);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  const TensorView* pv = (*ref)->Find("generate_prompt_ids");
  const TensorView* gv = (*ref)->Find("generate_greedy_ids");
  ASSERT_NE(pv, nullptr);
  ASSERT_NE(gv, nullptr);
  const std::vector<int32_t> p = ::mq::testing::ToInt32(*pv), g = ::mq::testing::ToInt32(*gv);
  const int64_t B = pv->shape[0], P = pv->shape[1], G = gv->shape[1];
  ASSERT_EQ(B, 2);
  ASSERT_LE(G, P + 32);

  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  // Both prompts at once: each must come out as transformers made it.
  std::vector<std::string> ids;
  for (int64_t b = 0; b < B; ++b) {
    const std::string id = NextId();
    ids.push_back(id);
    std::vector<int32_t> prompt(p.begin() + b * P, p.begin() + (b + 1) * P);
    ASSERT_TRUE(engine->SubmitGenerate(id, Ids(prompt, 32), recorder_.Sink(id), recorder_.Errors(id)).ok());
  }
  ASSERT_TRUE(recorder_.WaitEnded(ids));
  for (int64_t b = 0; b < B; ++b) {
    SCOPED_TRACE("row " + std::to_string(b));
    // The continuation up to and including eos; transformers pads the rest of the row with 1.
    std::vector<int32_t> want;
    int64_t j = P;
    for (; j < G; ++j) {
      want.push_back(g[b * G + j]);
      if (g[b * G + j] == kEos) break;
    }
    for (++j; j < G; ++j) EXPECT_EQ(g[b * G + j], 1) << "padding after eos";
    CallLog log = recorder_.Get(ids[b]);
    ExpectWellFormed(log, ids[b]);
    ASSERT_EQ(log.completions.size(), 1u);
    ExpectGreedyCompletion(log.completions[0], want, 32, static_cast<size_t>(P), Decode(want), "reference");
    EXPECT_EQ(log.completions[0].finish_reason, "eos");  // both reference rows end in eos
  }
}

// ---------------------------------------------------------------------------------------------
// 2. Concurrent calls return exactly what each returns alone.

class ServingEngineConcurrencyTest : public ServingEngineTest {
 protected:
  // 16 prompts of 1..64 tokens (several over the prefill chunk of 8), text and ids.
  std::vector<GenerationInput> SixteenInputs() {
    const size_t lengths[16] = {1, 2, 3, 5, 7, 8, 9, 12, 15, 16, 17, 23, 31, 40, 47, 64};
    std::vector<GenerationInput> inputs;
    for (int i = 0; i < 16; ++i) {
      const std::vector<int32_t> slice = EvalSlice(static_cast<size_t>(37 * i), lengths[i]);
      GenerationInput in = i % 2 == 0 ? Ids(slice) : Text(Decode(slice));
      in.params.max_new_tokens = 20 + i;
      in.params.ignore_eos = i % 4 != 0;  // most run to their length: long overlapping streams
      if (i % 5 == 3) in = Sampled(std::move(in), 1000 + static_cast<uint64_t>(i));
      inputs.push_back(std::move(in));
    }
    return inputs;
  }

  void Check(const ServingOptions& o) {
    const std::vector<GenerationInput> inputs = SixteenInputs();
    auto engine = MakeEngine(o);
    ASSERT_NE(engine, nullptr);
    std::vector<Completion> alone;
    for (const auto& in : inputs) alone.push_back(RunOne(*engine, in));

    std::mutex mu;
    int64_t max_batch = 0, steps = 0;
    int32_t max_waiting = 0, max_running = 0;  // stats at the calls' first tokens
    engine->SetStepObserver([&](int64_t batch, double) {
      std::lock_guard<std::mutex> l(mu);
      max_batch = std::max(max_batch, batch);
      steps += 1;
    });
    ServingEngine* e = engine.get();
    EventHook at_first = [&, e](const GenerationEvent& ev, int) {
      if (ev.first) {
        const ServingStats s = e->stats();
        std::lock_guard<std::mutex> l(mu);
        max_waiting = std::max(max_waiting, s.waiting);
        max_running = std::max(max_running, s.running);
      }
      return true;
    };
    std::vector<std::string> ids;
    for (const auto& in : inputs) {
      ids.push_back(NextId());
      Status st = engine->SubmitGenerate(ids.back(), in, recorder_.Sink(ids.back(), at_first), recorder_.Errors(ids.back()));
      ASSERT_TRUE(st.ok()) << st.ToString();
    }
    ASSERT_TRUE(recorder_.WaitEnded(ids));
    for (size_t i = 0; i < inputs.size(); ++i) {
      SCOPED_TRACE("prompt " + std::to_string(i));
      CallLog log = recorder_.Get(ids[i]);
      ExpectWellFormed(log, ids[i]);
      ASSERT_EQ(log.errors, 0) << log.error->ToString();
      ASSERT_EQ(log.completions.size(), 1u);
      const Completion& c = log.completions[0];
      EXPECT_EQ(c.ids, alone[i].ids);
      EXPECT_EQ(c.text, alone[i].text);
      EXPECT_EQ(c.finish_reason, alone[i].finish_reason);
      EXPECT_EQ(c.prompt_tokens, alone[i].prompt_tokens);
      EXPECT_FALSE(c.ids.empty());
    }
    {
      std::lock_guard<std::mutex> l(mu);
      // The calls really overlapped, within the batch and slot limits.
      EXPECT_GT(max_batch, 1);
      EXPECT_LE(max_batch, std::min(o.backend.max_batch, o.backend.num_slots));
      EXPECT_GT(steps, 0);
      EXPECT_LE(max_running, o.backend.num_slots);
      // With fewer slots than calls, later calls waited in the queue for a slot.
      if (o.backend.num_slots < static_cast<int32_t>(inputs.size())) EXPECT_GT(max_waiting, 0);
    }
    EXPECT_TRUE(Idle(*engine));
  }
};

TEST_F(ServingEngineConcurrencyTest, SixteenPromptsWithSixteenSlotsEqualAlone) {
  Check(Options(16, 16, /*prefill=*/8));
}

TEST_F(ServingEngineConcurrencyTest, SixteenPromptsWithFourSlotsQueueAndEqualAlone) {
  Check(Options(4, 4, /*prefill=*/8));
}

TEST_F(ServingEngineConcurrencyTest, DecodeBatchSplitOverMaxBatchEqualsAlone) {
  Check(Options(16, 5, /*prefill=*/8));  // 16 running, decoded in batches of at most 5
}

// A greedy prompt over the prefill chunk also equals mq::Generate through a chunked engine.
TEST_F(ServingEngineConcurrencyTest, ChunkedGreedyEqualsGenerate) {
  auto engine = MakeEngine(Options(4, 4, /*prefill=*/8));
  ASSERT_NE(engine, nullptr);
  for (size_t len : {7u, 8u, 9u, 17u, 33u}) {
    const std::vector<int32_t> prompt = EvalSlice(500, len);
    const std::vector<int32_t> want = Reference(prompt, 32);
    ExpectGreedyCompletion(RunOne(*engine, Ids(prompt, 32)), want, 32, len, Decode(want), "length " + std::to_string(len));
  }
}

// ---------------------------------------------------------------------------------------------
// 3. Chunked prefill equals one-chunk prefill.

TEST_F(ServingEngineTest, ChunkedPrefillEqualsOneChunk) {
  const std::vector<int32_t> prompt = EvalSlice(200, 41);
  auto chunked = MakeEngine(Options(2, 2, /*prefill=*/3));
  auto whole = MakeEngine(Options(2, 2, /*prefill=*/512));
  ASSERT_NE(chunked, nullptr);
  ASSERT_NE(whole, nullptr);
  GenerationInput in = Ids(prompt, 32);
  in.return_prompt_logits = true;
  const Completion a = RunOne(*chunked, in);
  const Completion b = RunOne(*whole, in);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.finish_reason, b.finish_reason);
  EXPECT_EQ(a.ids, Reference(prompt, 32));
  EXPECT_GE(a.ids.size(), 2u);
  // The prompt's state after 14 chunks is the one-chunk state: the next-token logits agree.
  ASSERT_EQ(a.prompt_logits.size(), static_cast<size_t>(V()));
  ASSERT_EQ(b.prompt_logits.size(), static_cast<size_t>(V()));
  double max_diff = 0;
  for (int64_t v = 0; v < V(); ++v) max_diff = std::max(max_diff, std::abs(double{a.prompt_logits[v]} - b.prompt_logits[v]));
  EXPECT_LE(max_diff, 1e-4);
}

// ---------------------------------------------------------------------------------------------
// 4. Seeded sampling.

TEST_F(ServingEngineTest, SeededSamplingRepeatsAndDiffersBySeed) {
  auto engine = MakeEngine(Options(4));
  ASSERT_NE(engine, nullptr);
  GenerationInput base = Text("Once upon a time", 48);
  base.params.ignore_eos = true;  // a long output: 48 draws
  const Completion a = RunOne(*engine, Sampled(base, 1234));
  const Completion b = RunOne(*engine, Sampled(base, 1234));
  const Completion c = RunOne(*engine, Sampled(base, 1235));
  ASSERT_EQ(a.ids.size(), 48u);
  EXPECT_EQ(a.finish_reason, "length");
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.text, b.text);
  EXPECT_EQ(a.seed, 1234u);
  EXPECT_EQ(c.seed, 1235u);
  EXPECT_NE(a.ids, c.ids);
  // Sampling really happened: greedy differs.
  GenerationInput greedy = base;
  EXPECT_NE(RunOne(*engine, greedy).ids, a.ids);

  // Without a seed the engine draws one and reports it; that seed reproduces the completion.
  GenerationInput unseeded = Sampled(base, 0);
  unseeded.seed_given = false;
  const Completion u = RunOne(*engine, unseeded);
  const Completion replay = RunOne(*engine, Sampled(base, u.seed));
  EXPECT_EQ(replay.ids, u.ids);
  EXPECT_EQ(replay.seed, u.seed);
}

TEST_F(ServingEngineTest, NCompletionsEqualSeparateSeeds) {
  auto engine = MakeEngine(Options(8));
  ASSERT_NE(engine, nullptr);
  GenerationInput base = Sampled(Text("In the broad and final sense", 40), 777);
  base.params.ignore_eos = true;
  GenerationInput four = base;
  four.params.n = 4;
  CallLog log = Run(*engine, four);
  ASSERT_EQ(log.errors, 0);
  ASSERT_EQ(log.done_events, 1);
  ASSERT_EQ(log.completions.size(), 4u);
  std::vector<std::vector<int32_t>> distinct;
  for (uint64_t i = 0; i < 4; ++i) {
    SCOPED_TRACE("completion " + std::to_string(i));
    const Completion& c = log.completions[i];
    EXPECT_EQ(c.seed, 777 + i);
    EXPECT_EQ(c.finish_reason, "length");
    EXPECT_EQ(c.ids.size(), 40u);
    const Completion one = RunOne(*engine, Sampled(base, 777 + i));
    EXPECT_EQ(c.ids, one.ids);
    EXPECT_EQ(c.text, one.text);
    if (std::find(distinct.begin(), distinct.end(), c.ids) == distinct.end()) distinct.push_back(c.ids);
  }
  EXPECT_GE(distinct.size(), 3u) << "the completions of one call should not share their draws";
  EXPECT_TRUE(Idle(*engine));
}

TEST_F(ServingEngineTest, SampledEqualsGenerateWithSamplingOptions) {
  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  int long_runs = 0;
  for (uint64_t seed : {1u, 2u, 99u, 123456789u}) {
    for (const std::string& text : {std::string("The"), std::string("-- John Dewey")}) {
      SCOPED_TRACE("seed " + std::to_string(seed) + " prompt " + text);
      const std::vector<int32_t> want = Reference(Encode(text), 48, SamplingOptions{0.8f, 40, 0.9f, seed});
      const Completion c = RunOne(*engine, Sampled(Text(text, 48), seed));
      EXPECT_EQ(c.ids, want);
      EXPECT_EQ(c.finish_reason, want.back() == kEos ? "eos" : "length");
      EXPECT_EQ(c.text, Decode(want));
      long_runs += want.size() >= 8 ? 1 : 0;
    }
  }
  EXPECT_GT(long_runs, 0);
}

// ---------------------------------------------------------------------------------------------
// 5. Stop strings.

TEST_F(ServingEngineTest, StopStringAcrossTokenBoundary) {
  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  bool tested = false;
  for (const std::string prompt : {"In the broad and final sense", "\n\n", "The", "-- John Dewey", "a"}) {
    GenerationInput in = Text(prompt, 40);
    in.params.ignore_eos = true;
    const Completion full = RunOne(*engine, in);
    ASSERT_EQ(full.finish_reason, "length");
    ASSERT_EQ(full.text, Decode(full.ids));
    // Offsets of each token's text (ASCII pieces: bytes concatenate to the text).
    for (size_t j = 1; j < full.ids.size() && !tested; ++j) {
      const std::string a = Decode({full.ids[j - 1]}), b = Decode({full.ids[j]});
      auto ascii = [](const std::string& s) { return std::all_of(s.begin(), s.end(), [](char ch) { return ch > 0; }); };
      if (a.size() < 2 || b.size() < 2 || !ascii(a) || !ascii(b)) continue;
      const std::vector<int32_t> head(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(j));
      const std::string before = Decode(head);
      if (before + b != Decode(std::vector<int32_t>(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(j + 1))))
        continue;
      const std::string stop = a.substr(a.size() - 2) + b.substr(0, 2);
      const size_t at = before.size() - 2;
      if (full.text.find(stop) != at) continue;  // it must first occur across this boundary
      SCOPED_TRACE("prompt \"" + prompt + "\" stop \"" + stop + "\"");
      GenerationInput s = in;
      s.params.stop = {"qqqzzz", stop};  // one that never occurs, and the spanning one
      const Completion c = RunOne(*engine, s);
      EXPECT_EQ(c.finish_reason, "stop");
      EXPECT_EQ(c.stop_string, stop);
      EXPECT_EQ(c.text, full.text.substr(0, at));
      // The ids end with the token that completed the match.
      EXPECT_EQ(c.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(j + 1)));
      EXPECT_EQ(c.completion_tokens, static_cast<int32_t>(j + 1));
      EXPECT_EQ(c.text.find(stop), std::string::npos);
      tested = true;
    }
    if (tested) break;
  }
  EXPECT_TRUE(tested) << "no output had two consecutive ASCII tokens of 2+ characters";
  EXPECT_TRUE(Idle(*engine));
}

// ---------------------------------------------------------------------------------------------
// 6. Text deltas.

TEST_F(ServingEngineTest, TextDeltasAreValidUtf8AndConcatenateToDecode) {
  auto engine = MakeEngine(Options(4));
  ASSERT_NE(engine, nullptr);
  // Non-ASCII prompts make this model emit single bytes of multi-byte characters (the tokenizer
  // splits emoji and CJK into byte tokens): deltas must hold a character back until complete.
  const std::vector<std::string> prompts = {"Grüße aus Köln 🙂", "東京タワー", "The quick brown fox", "Q:",
                                            "naïve café — ünïcödé"};
  int non_ascii = 0, split_chars = 0;
  for (const auto& p : prompts) {
    for (int variant = 0; variant < 3; ++variant) {
      GenerationInput in = Text(p, 48);
      in.params.ignore_eos = true;
      if (variant > 0) in = Sampled(std::move(in), 17 + static_cast<uint64_t>(variant), 1.5f, 0, 1.0f);
      CallLog log = Run(*engine, in);  // checks, among the invariants, that every delta is valid UTF-8
      ASSERT_EQ(log.completions.size(), 1u);
      const Completion& c = log.completions[0];
      const std::vector<std::string>& deltas = c.deltas;
      EXPECT_EQ(deltas.size(), 48u);
      EXPECT_EQ(c.finish_reason, "length");
      EXPECT_EQ(c.ids.size(), 48u);
      std::string joined;
      for (const auto& d : deltas) {
        EXPECT_TRUE(ValidUtf8(d));
        joined += d;
      }
      EXPECT_EQ(joined, Decode(c.ids)) << p << " variant " << variant;
      EXPECT_EQ(c.text, joined);
      if (std::any_of(joined.begin(), joined.end(), [](char ch) { return ch < 0; })) ++non_ascii;
      for (int32_t t : c.ids) {
        auto bytes = tok().DecodeBytes({t}, true);
        ASSERT_TRUE(bytes.ok());
        if (!ValidUtf8(*bytes)) ++split_chars;
      }
    }
  }
  EXPECT_GT(non_ascii, 0) << "no run produced non-ASCII text";
  EXPECT_GT(split_chars, 0) << "no token held part of a character";
}

// ---------------------------------------------------------------------------------------------
// 7. min_tokens, ignore_eos, stop_token_ids.

TEST_F(ServingEngineTest, MinTokensIgnoreEosAndStopTokenIds) {
  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  const std::string prompt = "Hello, world! 123";  // greedily: ".", eos
  const Completion plain = RunOne(*engine, Text(prompt, 40));
  ASSERT_EQ(plain.finish_reason, "eos");
  ASSERT_LT(plain.ids.size(), 20u);
  const size_t eos_at = plain.ids.size() - 1;

  GenerationInput min = Text(prompt, 40);
  min.params.min_tokens = 20;
  const Completion m = RunOne(*engine, min);
  ASSERT_GE(m.ids.size(), 20u);
  for (size_t i = 0; i < 20; ++i) EXPECT_NE(m.ids[i], kEos) << "eos at " << i << " before min_tokens";
  // Up to where greedy chose eos, the same tokens; there the second-best one.
  EXPECT_TRUE(std::equal(plain.ids.begin(), plain.ids.begin() + static_cast<std::ptrdiff_t>(eos_at), m.ids.begin()));
  EXPECT_TRUE(m.finish_reason == "eos" || m.finish_reason == "length");
  if (m.finish_reason == "eos") EXPECT_EQ(m.ids.back(), kEos);
  if (m.finish_reason == "length") EXPECT_EQ(m.ids.size(), 40u);
  // min_tokens changes no logits but eos's: the continuation after the forced token is greedy.
  {
    std::vector<int32_t> forced = Encode(prompt);
    forced.insert(forced.end(), m.ids.begin(), m.ids.begin() + 20);
    const std::vector<int32_t> rest = Reference(forced, 40 - 20);
    EXPECT_EQ(std::vector<int32_t>(m.ids.begin() + 20, m.ids.end()), rest);
  }

  GenerationInput ign = Text(prompt, 40);
  ign.params.ignore_eos = true;
  const Completion g = RunOne(*engine, ign);
  EXPECT_EQ(g.finish_reason, "length");
  ASSERT_EQ(g.ids.size(), 40u);
  EXPECT_EQ(g.ids[eos_at], kEos) << "ignore_eos keeps the model's eos as an ordinary token";
  EXPECT_TRUE(std::equal(plain.ids.begin(), plain.ids.end(), g.ids.begin()));
  EXPECT_EQ(g.text, Decode(g.ids));

  // stop_token_ids: pick a token of a long greedy output that first occurs past position 3.
  GenerationInput longer = Text("In the broad and final sense", 40);
  longer.params.ignore_eos = true;
  const Completion full = RunOne(*engine, longer);
  ASSERT_EQ(full.ids.size(), 40u);
  size_t at = 0;
  for (size_t i = 4; i < full.ids.size(); ++i) {
    if (full.ids[i] != kEos && std::find(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(i), full.ids[i]) ==
                                   full.ids.begin() + static_cast<std::ptrdiff_t>(i)) {
      at = i;
      break;
    }
  }
  ASSERT_GT(at, 0u);
  GenerationInput st = longer;
  st.params.stop_token_ids = {full.ids[at]};
  const Completion s = RunOne(*engine, st);
  EXPECT_EQ(s.finish_reason, "stop");
  EXPECT_TRUE(s.stop_string.empty());
  EXPECT_EQ(s.ids, std::vector<int32_t>(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(at + 1)));
  // The stop token's own text is not part of the completion.
  EXPECT_EQ(s.text, Decode(std::vector<int32_t>(full.ids.begin(), full.ids.begin() + static_cast<std::ptrdiff_t>(at))));

  // Before min_tokens a stop token is banned too.
  GenerationInput st_min = st;
  st_min.params.min_tokens = static_cast<int32_t>(at + 2);
  const Completion sm = RunOne(*engine, st_min);
  ASSERT_GE(sm.ids.size(), at + 2);
  for (size_t i = 0; i < at + 2; ++i) EXPECT_NE(sm.ids[i], full.ids[at]) << "stop token at " << i << " before min_tokens";
}

// ---------------------------------------------------------------------------------------------
// 8. Cancellation.

TEST_F(ServingEngineTest, CancelLongGenerations) {
  auto engine = MakeEngine(Options(8));
  ASSERT_NE(engine, nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 8; ++i) {
    GenerationInput in = Ids(EvalSlice(static_cast<size_t>(11 * i), static_cast<size_t>(3 + i)), 4096);
    in.params.ignore_eos = true;
    ids.push_back(NextId());
    ASSERT_TRUE(engine->SubmitGenerate(ids.back(), in, recorder_.Sink(ids.back()), recorder_.Errors(ids.back())).ok());
  }
  for (int i = 0; i < 8; ++i) {
    ASSERT_TRUE(recorder_.WaitEvents(ids[i], 3 + i));
    engine->Cancel(ids[i]);
  }
  ASSERT_TRUE(recorder_.WaitEnded(ids));
  for (const auto& id : ids) {
    CallLog log = recorder_.Get(id);
    ExpectWellFormed(log, id);
    ASSERT_EQ(log.errors, 1);
    EXPECT_EQ(log.error->code(), StatusCode::kCancelled) << log.error->ToString();
    EXPECT_EQ(log.done_events, 0);
    ASSERT_EQ(log.completions.size(), 1u);
    EXPECT_LT(log.completions[0].ids.size(), 4096u);
    EXPECT_TRUE(log.completions[0].finish_reason.empty());
  }
  EXPECT_TRUE(Idle(*engine));
  engine->Cancel(ids[0]);      // an ended call: ignored
  engine->Cancel("no-such");   // unknown: ignored
  // Nothing more arrives for the cancelled calls (a decode step is well under this wait).
  const auto before = recorder_.Get(ids[0]).events;
  const Completion fresh = RunOne(*engine, Text("The", 8));
  EXPECT_FALSE(fresh.ids.empty());
  EXPECT_EQ(recorder_.Get(ids[0]).events, before);
  EXPECT_EQ(recorder_.Get(ids[0]).errors, 1);
}

// A Cancel made by a sink takes effect before the next decode step: at the first token (sent
// right after the prompt's prefill) as well as at a later one (sent by a decode step).
TEST_F(ServingEngineTest, CancelFromSinkStopsBeforeTheNextStep) {
  auto engine = MakeEngine(Options(4));
  ASSERT_NE(engine, nullptr);
  ServingEngine* e = engine.get();
  for (int cancel_at : {1, 2, 5}) {
    for (int32_t n : {1, 3}) {
      SCOPED_TRACE("cancel at event " + std::to_string(cancel_at) + ", n = " + std::to_string(n));
      const std::string id = NextId();
      GenerationInput in = Sampled(Text("The", 4096), 5);
      in.params.ignore_eos = true;
      in.params.n = n;
      ASSERT_TRUE(e->SubmitGenerate(id, in,
                                    recorder_.Sink(id,
                                                   [e, id, cancel_at](const GenerationEvent&, int count) {
                                                     if (count == cancel_at) e->Cancel(id);
                                                     return true;
                                                   }),
                                    recorder_.Errors(id))
                      .ok());
      ASSERT_TRUE(recorder_.WaitEnded({id}));
      CallLog log = recorder_.Get(id);
      ExpectWellFormed(log, id);
      // The events of the step (or first tokens) in which the Cancel was made, and none after:
      // each step sends one event per completion.
      const int step_end = (cancel_at + n - 1) / n * n;
      EXPECT_EQ(log.events, step_end) << "a Cancel takes effect before the next decode step";
      ASSERT_TRUE(log.error.has_value());
      EXPECT_EQ(log.error->code(), StatusCode::kCancelled);
      EXPECT_TRUE(Idle(*engine));
    }
  }
}

TEST_F(ServingEngineTest, ThousandCancelledRequests) {
  ServingOptions o = Options(8);
  o.max_waiting = 1000;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  ServingEngine* e = engine.get();
  const std::vector<int32_t> probe_prompt = EvalSlice(300, 20);
  const Completion before = RunOne(*engine, Ids(probe_prompt, 32));
  ASSERT_EQ(before.ids, Reference(probe_prompt, 32));

  // Kinds: 0 cancelled right after submission (mostly still waiting), 1 cancelled from its sink
  // at its first event (running), 2 cancelled at its 3rd event, 3 its sink reports the client
  // gone at its 2nd event, 4 runs to its end (short), 5 cancelled by the test thread later.
  constexpr int kCalls = 1000;
  std::vector<std::string> ids;
  std::vector<int> kinds, ns;
  std::mt19937 rng(7);
  for (int i = 0; i < kCalls; ++i) {
    const int kind = i % 6;
    const std::string id = "storm-" + std::to_string(i);
    const size_t offset = rng() % 400, length = 1 + rng() % 12;
    GenerationInput in = Ids(EvalSlice(offset, length), kind == 4 ? 4 : 64);
    in.params.ignore_eos = true;
    if (i % 7 == 0) in.params.n = 2;
    if (i % 3 == 0) in = Sampled(std::move(in), static_cast<uint64_t>(i));
    EventHook hook = [e, id, kind](const GenerationEvent&, int count) {
      if (kind == 1 && count == 1) e->Cancel(id);
      if (kind == 2 && count == 3) e->Cancel(id);
      return !(kind == 3 && count == 2);
    };
    Status st = e->SubmitGenerate(id, std::move(in), recorder_.Sink(id, hook), recorder_.Errors(id));
    ASSERT_TRUE(st.ok()) << i << ": " << st.ToString();
    ids.push_back(id);
    kinds.push_back(kind);
    ns.push_back(i % 7 == 0 ? 2 : 1);
    if (kind == 0) e->Cancel(id);
  }
  for (int i = 0; i < kCalls; ++i)
    if (kinds[i] == 5) e->Cancel(ids[i]);
  ASSERT_TRUE(recorder_.WaitEnded(ids, 60s));
  int cancelled = 0, finished = 0;
  for (int i = 0; i < kCalls; ++i) {
    CallLog log = recorder_.Get(ids[i]);
    ExpectWellFormed(log, ids[i]);
    if (kinds[i] == 4) {
      EXPECT_EQ(log.done_events, 1) << ids[i];
      EXPECT_EQ(log.errors, 0) << ids[i];
      for (const auto& c : log.completions) EXPECT_EQ(c.ids.size(), 4u);
      ++finished;
    } else {
      ASSERT_EQ(log.errors, 1) << ids[i];
      EXPECT_EQ(log.error->code(), StatusCode::kCancelled) << ids[i];
      // No event after the one that cancelled but those of the same step (one per completion).
      if (kinds[i] == 1) EXPECT_EQ(log.events, ns[i]) << ids[i];
      if (kinds[i] == 2) EXPECT_EQ(log.events, ns[i] == 1 ? 3 : 4) << ids[i];
      if (kinds[i] == 3) EXPECT_EQ(log.events, 2) << ids[i];
      ++cancelled;
    }
  }
  EXPECT_EQ(finished + cancelled, kCalls);
  ASSERT_TRUE(Idle(*engine)) << "running " << engine->stats().running << " waiting " << engine->stats().waiting
                             << " free " << engine->stats().free_slots;
  // No state was corrupted: the same request gives the same answer.
  const Completion after = RunOne(*engine, Ids(probe_prompt, 32));
  EXPECT_EQ(after.ids, before.ids);
  EXPECT_EQ(after.text, before.text);
  // And all slots are usable at once.
  std::vector<std::string> probe_ids;
  for (int i = 0; i < 8; ++i) {
    probe_ids.push_back(NextId());
    ASSERT_TRUE(e->SubmitGenerate(probe_ids.back(), Ids(probe_prompt, 32), recorder_.Sink(probe_ids.back()),
                                  recorder_.Errors(probe_ids.back()))
                    .ok());
  }
  ASSERT_TRUE(recorder_.WaitEnded(probe_ids));
  for (const auto& id : probe_ids) {
    CallLog log = recorder_.Get(id);
    ASSERT_EQ(log.completions.size(), 1u);
    EXPECT_EQ(log.completions[0].ids, before.ids) << id;
  }
  EXPECT_TRUE(Idle(*engine));
}

TEST_F(ServingEngineTest, SinkReturningFalseDropsTheCall) {
  auto engine = MakeEngine(Options(4));
  ASSERT_NE(engine, nullptr);
  GenerationInput in = Text("The", 4096);
  in.params.ignore_eos = true;
  CallLog log = Run(*engine, in, [](const GenerationEvent&, int count) { return count < 2; });
  EXPECT_EQ(log.events, 2);
  ASSERT_TRUE(log.error.has_value());
  EXPECT_EQ(log.error->code(), StatusCode::kCancelled);
  EXPECT_EQ(log.done_events, 0);
  EXPECT_TRUE(Idle(*engine));

  // n > 1, the client gone at the very first event (completion 0's, before the other
  // completions started): the whole call ends, its slots are freed.
  GenerationInput multi = in;
  multi.params.n = 3;
  CallLog m = Run(*engine, multi, [](const GenerationEvent&, int) { return false; });
  EXPECT_EQ(m.events, 1);
  ASSERT_TRUE(m.error.has_value());
  EXPECT_EQ(m.error->code(), StatusCode::kCancelled);
  EXPECT_TRUE(Idle(*engine));

  // The engine still works.
  const std::vector<int32_t> prompt = Encode("The");
  EXPECT_EQ(RunOne(*engine, Text("The", 16)).ids, Reference(prompt, 16));
}

// ---------------------------------------------------------------------------------------------
// 9. Limits.

TEST_F(ServingEngineTest, QueueFullIsResourceExhausted) {
  ServingOptions o = Options(1);
  o.max_waiting = 2;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  auto long_call = [&] {
    GenerationInput in = Text("The", 4096);
    in.params.ignore_eos = true;
    return in;
  };
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(NextId());
    Status st = engine->SubmitGenerate(ids.back(), long_call(), recorder_.Sink(ids.back()), recorder_.Errors(ids.back()));
    ASSERT_TRUE(st.ok()) << i << ": " << st.ToString();
    // The first call holds the only slot before the queue fills.
    if (i == 0) ASSERT_TRUE(recorder_.WaitEvents(ids[0], 1));
  }
  EXPECT_TRUE(WaitStats(*engine, [](const ServingStats& s) { return s.running == 1 && s.waiting == 2 && s.free_slots == 0; }));
  Status st = engine->SubmitGenerate("fourth", long_call(), recorder_.Sink("fourth"), recorder_.Errors("fourth"));
  EXPECT_EQ(st.code(), StatusCode::kResourceExhausted) << st.ToString();
  EXPECT_NE(st.message().find("waiting"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("2"), std::string::npos) << "the message names the limit: " << st.message();
  // Score calls share the queue.
  ScoreInput sc;
  sc.ids = {5, 6, 7};
  EXPECT_EQ(engine->SubmitScore("score", sc, recorder_.Score("score")).code(), StatusCode::kResourceExhausted);
  // The refused call was never started.
  EXPECT_EQ(recorder_.Get("fourth").events, 0);
  EXPECT_EQ(recorder_.Get("fourth").errors, 0);
  for (const auto& id : ids) engine->Cancel(id);
  ASSERT_TRUE(recorder_.WaitEnded(ids));
  EXPECT_TRUE(Idle(*engine));
  // Space again.
  EXPECT_TRUE(engine->SubmitGenerate("fifth", Text("The", 2), recorder_.Sink("fifth"), recorder_.Errors("fifth")).ok());
  EXPECT_TRUE(recorder_.WaitEnded({"fifth"}));
}

TEST_F(ServingEngineTest, InvalidRequestsAreRefusedAtSubmit) {
  ServingOptions o = Options(4);
  o.max_prompt_tokens = 10;
  o.max_new_tokens = 64;
  auto engine = MakeEngine(o);
  ASSERT_NE(engine, nullptr);
  auto submit = [&](const std::string& id, GenerationInput in) {
    return engine->SubmitGenerate(id, std::move(in), recorder_.Sink(id), recorder_.Errors(id));
  };
  // Prompt over max_prompt_tokens: ids and text.
  Status st = submit("long-ids", Ids(EvalSlice(0, 11), 8));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("10"), std::string::npos) << st.message();
  EXPECT_TRUE(submit("ok-ids", Ids(EvalSlice(0, 10), 1)).ok());
  std::string long_text;
  for (int i = 0; i < 20; ++i) long_text += " word";
  ASSERT_GT(Encode(long_text).size(), 10u);
  EXPECT_EQ(submit("long-text", Text(long_text, 8)).code(), StatusCode::kInvalidArgument);
  std::string huge_text(10 * 64 + 1, 'a');  // refused by its byte size before encoding
  EXPECT_EQ(submit("huge-text", Text(huge_text, 8)).code(), StatusCode::kInvalidArgument);
  // max_new_tokens over the engine's limit (valid for the API).
  st = submit("many-new", Ids({5}, 65));
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  EXPECT_NE(st.message().find("64"), std::string::npos) << st.message();
  EXPECT_TRUE(submit("ok-new", Ids({5}, 64)).ok());
  // Token ids outside the vocabulary.
  EXPECT_EQ(submit("big-id", Ids({5, static_cast<int32_t>(V())}, 8)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(submit("neg-id", Ids({-1}, 8)).code(), StatusCode::kInvalidArgument);
  GenerationInput stop_id = Ids({5}, 8);
  stop_id.params.stop_token_ids = {static_cast<int32_t>(V())};
  EXPECT_EQ(submit("big-stop-id", stop_id).code(), StatusCode::kInvalidArgument);
  // n over the slots.
  GenerationInput five = Ids({5}, 8);
  five.params.n = 5;
  st = submit("five", five);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << st.ToString();
  // Empty prompts.
  EXPECT_EQ(submit("empty-ids", Ids({}, 8)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(submit("empty-text", Text("", 8)).code(), StatusCode::kInvalidArgument);
  // Invalid parameters.
  GenerationInput bad_t = Ids({5}, 8);
  bad_t.params.sampling.temperature = -1;
  EXPECT_EQ(submit("bad-t", bad_t).code(), StatusCode::kInvalidArgument);
  // Duplicate id of a live call.
  GenerationInput live = Ids({5}, 64);
  live.params.ignore_eos = true;
  const std::string dup = "dup";
  ASSERT_TRUE(engine
                  ->SubmitGenerate(dup, live,
                                   recorder_.Sink(dup,
                                                  [e = engine.get(), dup, this](const GenerationEvent&, int count) {
                                                    if (count == 1) {
                                                      // While the call runs, the same id is refused.
                                                      Status again = e->SubmitGenerate(dup, Ids({5}, 1), nullptr, nullptr);
                                                      dup_status_ = again;
                                                    }
                                                    return true;
                                                  }),
                                   recorder_.Errors(dup))
                  .ok());
  ASSERT_TRUE(recorder_.WaitEnded({dup, "ok-ids", "ok-new"}));
  EXPECT_EQ(dup_status_.code(), StatusCode::kAlreadyExists) << dup_status_.ToString();
  EXPECT_EQ(recorder_.Get(dup).done_events, 1);
  // Nothing refused was started.
  for (const char* id : {"long-ids", "long-text", "huge-text", "many-new", "big-id", "neg-id", "big-stop-id", "five",
                         "empty-ids", "empty-text", "bad-t"}) {
    EXPECT_EQ(recorder_.Get(id).events, 0) << id;
    EXPECT_EQ(recorder_.Get(id).errors, 0) << id;
  }
  EXPECT_TRUE(Idle(*engine));
  // A finished call's id may be used again.
  EXPECT_TRUE(engine->SubmitGenerate("ok-ids", Ids({5}, 1), recorder_.Sink("ok-ids-2"), recorder_.Errors("ok-ids-2")).ok());
  EXPECT_TRUE(recorder_.WaitEnded({"ok-ids-2"}));
}

// ---------------------------------------------------------------------------------------------
// 10. Score.

// Naive double log-softmax of one row.
std::vector<double> LogSoftmax(const float* row, int64_t V) {
  double m = -INFINITY;
  for (int64_t v = 0; v < V; ++v) m = std::max(m, double{row[v]});
  double s = 0;
  for (int64_t v = 0; v < V; ++v) s += std::exp(double{row[v]} - m);
  const double lse = m + std::log(s);
  std::vector<double> out(static_cast<size_t>(V));
  for (int64_t v = 0; v < V; ++v) out[static_cast<size_t>(v)] = double{row[v]} - lse;
  return out;
}

TEST_F(ServingEngineTest, ScoreEqualsForwardLogSoftmaxAndChunksAgree) {
  const std::string text =
      "In the broad and final sense all institutions are educational in the sense that they operate to form the "
      "attitudes of a society.";
  const std::vector<int32_t> ids = Encode(text);
  ASSERT_GT(ids.size(), 16u);
  const std::vector<float> logits = ForwardLogits(ids);
  ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(V()));

  auto whole = MakeEngine(Options(2, 2, 512, 512));
  auto chunked = MakeEngine(Options(2, 2, 512, 7));  // the text is scored in chunks of 7 rows
  ASSERT_NE(whole, nullptr);
  ASSERT_NE(chunked, nullptr);
  auto score = [&](ServingEngine& e, ScoreInput in) -> ScoreResult {
    const std::string id = NextId();
    Status st = e.SubmitScore(id, std::move(in), recorder_.Score(id));
    EXPECT_TRUE(st.ok()) << st.ToString();
    auto r = recorder_.WaitScore(id);
    EXPECT_TRUE(r.has_value());
    if (!r) return {};
    EXPECT_TRUE(r->ok()) << r->status().ToString();
    EXPECT_EQ(recorder_.ScoreResults(id), 1u);
    return r->ok() ? **r : ScoreResult{};
  };
  ScoreInput by_text;
  by_text.has_text = true;
  by_text.text = text;
  by_text.top_logprobs = 5;
  const ScoreResult a = score(*whole, by_text);
  const ScoreResult b = score(*chunked, by_text);
  ScoreInput by_ids;
  by_ids.ids = ids;
  by_ids.top_logprobs = 5;
  const ScoreResult c = score(*chunked, by_ids);

  for (const ScoreResult* r : {&a, &b, &c}) {
    ASSERT_EQ(r->token_ids, ids);
    ASSERT_EQ(r->logprobs.size(), ids.size() - 1);
    double nll = 0;
    for (size_t i = 0; i + 1 < ids.size(); ++i) {
      SCOPED_TRACE("position " + std::to_string(i));
      const std::vector<double> ls = LogSoftmax(logits.data() + i * static_cast<size_t>(V()), V());
      const TokenChoice& t = r->logprobs[i];
      EXPECT_EQ(t.token, ids[i + 1]);
      EXPECT_NEAR(t.logprob, ls[static_cast<size_t>(ids[i + 1])], 1e-4);
      nll -= t.logprob;
      ASSERT_EQ(t.top.size(), 5u);
      std::vector<int32_t> order(static_cast<size_t>(V()));
      for (int32_t v = 0; v < V(); ++v) order[static_cast<size_t>(v)] = v;
      std::partial_sort(order.begin(), order.begin() + 5, order.end(),
                        [&](int32_t x, int32_t y) { return ls[x] > ls[y] || (ls[x] == ls[y] && x < y); });
      for (size_t k = 0; k < 5; ++k) {
        EXPECT_NEAR(t.top[k].logprob, ls[static_cast<size_t>(t.top[k].token)], 1e-4);
        EXPECT_NEAR(t.top[k].logprob, ls[static_cast<size_t>(order[k])], 1e-4);
        if (k > 0) EXPECT_GE(t.top[k - 1].logprob, t.top[k].logprob) << "top_logprobs sorted, most likely first";
      }
      EXPECT_GE(t.top[0].logprob, t.logprob);
    }
    nll /= static_cast<double>(ids.size() - 1);
    EXPECT_NEAR(r->mean_nll, nll, 1e-4);
    EXPECT_DOUBLE_EQ(r->perplexity, std::exp(r->mean_nll));
    EXPECT_GT(r->mean_nll, 0);
  }
  // Chunked equals one chunk.
  for (size_t i = 0; i < a.logprobs.size(); ++i) {
    EXPECT_NEAR(a.logprobs[i].logprob, b.logprobs[i].logprob, 1e-4) << i;
    for (size_t k = 0; k < 5; ++k) EXPECT_NEAR(a.logprobs[i].top[k].logprob, b.logprobs[i].top[k].logprob, 1e-4);
  }
  EXPECT_NEAR(a.mean_nll, b.mean_nll, 1e-4);
  EXPECT_NEAR(a.perplexity, b.perplexity, 1e-3);

  // Score refusals.
  ScoreInput one;
  one.ids = {5};
  EXPECT_EQ(whole->SubmitScore("one", one, recorder_.Score("one")).code(), StatusCode::kInvalidArgument);
  ScoreInput top21 = by_ids;
  top21.top_logprobs = 21;
  EXPECT_EQ(whole->SubmitScore("top21", top21, recorder_.Score("top21")).code(), StatusCode::kInvalidArgument);
  ScoreInput bad;
  bad.ids = {5, static_cast<int32_t>(V())};
  EXPECT_EQ(whole->SubmitScore("bad", bad, recorder_.Score("bad")).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(Idle(*whole));
  EXPECT_TRUE(Idle(*chunked));
}

// Score calls interleaved with generations: each generation is unchanged, each score right.
TEST_F(ServingEngineTest, ScoreBesideGenerations) {
  auto engine = MakeEngine(Options(4, 4, 8, 8));
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = EvalSlice(50, 20);
  const std::vector<int32_t> want = Reference(prompt, 32);
  const std::vector<int32_t> scored = EvalSlice(700, 30);
  const std::vector<float> logits = ForwardLogits(scored);
  std::vector<std::string> gens;
  for (int i = 0; i < 3; ++i) {
    gens.push_back(NextId());
    ASSERT_TRUE(engine->SubmitGenerate(gens.back(), Ids(prompt, 32), recorder_.Sink(gens.back()), recorder_.Errors(gens.back())).ok());
    ScoreInput in;
    in.ids = scored;
    const std::string sid = "score-" + std::to_string(i);
    ASSERT_TRUE(engine->SubmitScore(sid, in, recorder_.Score(sid)).ok());
  }
  ASSERT_TRUE(recorder_.WaitEnded(gens));
  for (const auto& id : gens) EXPECT_EQ(recorder_.Get(id).completions.at(0).ids, want);
  for (int i = 0; i < 3; ++i) {
    auto r = recorder_.WaitScore("score-" + std::to_string(i));
    ASSERT_TRUE(r.has_value());
    ASSERT_TRUE(r->ok());
    ASSERT_EQ((*r)->logprobs.size(), scored.size() - 1);
    for (size_t j = 0; j + 1 < scored.size(); ++j) {
      const std::vector<double> ls = LogSoftmax(logits.data() + j * static_cast<size_t>(V()), V());
      EXPECT_NEAR((*r)->logprobs[j].logprob, ls[static_cast<size_t>(scored[j + 1])], 1e-4);
    }
  }
  EXPECT_TRUE(Idle(*engine));
}

// ---------------------------------------------------------------------------------------------
// 11. Prompt logits and token logprobs.

TEST_F(ServingEngineTest, PromptLogitsEqualForwardLastPosition) {
  auto engine = MakeEngine(Options(4, 4, 8));  // a 19-token prompt: three chunks
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = EvalSlice(400, 19);
  const std::vector<float> logits = ForwardLogits(prompt);
  const float* last = logits.data() + (prompt.size() - 1) * static_cast<size_t>(V());
  GenerationInput in = Sampled(Ids(prompt, 6), 3);
  in.params.n = 2;
  in.return_prompt_logits = true;
  CallLog log = Run(*engine, in);
  ASSERT_EQ(log.completions.size(), 2u);
  const Completion& c0 = log.completions[0];
  ASSERT_EQ(c0.prompt_logits.size(), static_cast<size_t>(V()));
  EXPECT_EQ(c0.prompt_logits_events, 1) << "only the first event carries the prompt logits";
  EXPECT_EQ(log.completions[1].prompt_logits_events, 0) << "completion 1 carries none";
  double max_diff = 0;
  for (int64_t v = 0; v < V(); ++v) max_diff = std::max(max_diff, std::abs(double{c0.prompt_logits[v]} - last[v]));
  EXPECT_LE(max_diff, 1e-4);
  EXPECT_LE(::mq::testing::RelError(c0.prompt_logits.data(), last, static_cast<size_t>(V())), 1e-5);

  // Not asked: none.
  CallLog plain = Run(*engine, Ids(prompt, 2));
  ASSERT_EQ(plain.completions.size(), 1u);
  EXPECT_EQ(plain.completions[0].prompt_logits_events, 0);
}

TEST_F(ServingEngineTest, TokenLogprobsEqualForwardLogSoftmax) {
  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  const std::vector<int32_t> prompt = Encode("In the broad and final sense");
  GenerationInput in = Ids(prompt, 12);
  in.params.ignore_eos = true;
  in.params.logprobs = 3;
  const Completion c = RunOne(*engine, in);
  ASSERT_EQ(c.ids.size(), 12u);
  ASSERT_EQ(c.logprobs.size(), 12u);
  std::vector<int32_t> all = prompt;
  all.insert(all.end(), c.ids.begin(), c.ids.end());
  const std::vector<float> logits = ForwardLogits(all);
  for (size_t i = 0; i < c.ids.size(); ++i) {
    const std::vector<double> ls = LogSoftmax(logits.data() + (prompt.size() - 1 + i) * static_cast<size_t>(V()), V());
    EXPECT_EQ(c.logprobs[i].token, c.ids[i]);
    EXPECT_NEAR(c.logprobs[i].logprob, ls[static_cast<size_t>(c.ids[i])], 1e-4) << i;
    ASSERT_EQ(c.logprobs[i].top.size(), 3u);
    EXPECT_EQ(c.logprobs[i].top[0].token, c.ids[i]) << "greedy picks the most likely token";
  }
}

// ---------------------------------------------------------------------------------------------
// 12. Shutdown with calls in flight.

TEST_F(ServingEngineTest, DestroyingTheEngineCancelsWaitingAndRunningCalls) {
  auto engine = MakeEngine(Options(2));
  ASSERT_NE(engine, nullptr);
  std::vector<std::string> ids;
  for (int i = 0; i < 6; ++i) {
    GenerationInput in = Ids(EvalSlice(static_cast<size_t>(9 * i), 5), 4096);
    in.params.ignore_eos = true;
    ids.push_back(NextId());
    ASSERT_TRUE(engine->SubmitGenerate(ids.back(), in, recorder_.Sink(ids.back()), recorder_.Errors(ids.back())).ok());
  }
  ScoreInput sc;
  sc.ids = EvalSlice(0, 10);
  ASSERT_TRUE(engine->SubmitScore("queued-score", sc, recorder_.Score("queued-score")).ok());
  ASSERT_TRUE(recorder_.WaitEvents(ids[0], 2));
  ASSERT_TRUE(recorder_.WaitEvents(ids[1], 2));
  EXPECT_TRUE(WaitStats(*engine, [](const ServingStats& s) { return s.running == 2 && s.waiting == 5; }));
  engine.reset();  // must not hang or crash
  for (const auto& id : ids) {
    CallLog log = recorder_.Get(id);
    ExpectWellFormed(log, id);
    ASSERT_EQ(log.errors, 1) << id;
    EXPECT_EQ(log.error->code(), StatusCode::kCancelled) << id;
    EXPECT_EQ(log.done_events, 0) << id;
  }
  EXPECT_GE(recorder_.Get(ids[0]).events, 2);
  EXPECT_EQ(recorder_.Get(ids[5]).events, 0);  // it was still waiting
  ASSERT_EQ(recorder_.ScoreResults("queued-score"), 1u);
  auto r = recorder_.WaitScore("queued-score");
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status().code(), StatusCode::kCancelled);
}

// Every slot is either free or counted as running, also while a call of n > 1 prefills (its
// completions 1..n−1 already hold their slots then).
TEST_F(ServingEngineTest, StatsCountEveryHeldSlot) {
  auto engine = MakeEngine(Options(4, 4, /*prefill=*/1));  // a prefill of one token per iteration
  ASSERT_NE(engine, nullptr);
  GenerationInput in = Ids(EvalSlice(0, 300), 4);
  in.params.n = 3;
  in.params.ignore_eos = true;
  const std::string id = NextId();
  ASSERT_TRUE(engine->SubmitGenerate(id, in, recorder_.Sink(id), recorder_.Errors(id)).ok());
  int64_t snapshots = 0, busy = 0, inconsistent = 0;
  ServingStats bad;
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  while (!recorder_.Ended(id) && std::chrono::steady_clock::now() < deadline) {
    const ServingStats s = engine->stats();
    ++snapshots;
    if (s.running > 0) ++busy;
    if (s.running + s.free_slots != 4) {
      ++inconsistent;
      bad = s;
    }
  }
  ASSERT_TRUE(recorder_.WaitEnded({id}));
  EXPECT_GT(busy, 0) << "no snapshot while the call ran (" << snapshots << " taken)";
  EXPECT_EQ(inconsistent, 0) << "running " << bad.running << " + free " << bad.free_slots << " != 4 slots";
  EXPECT_TRUE(Idle(*engine));
  CallLog log = recorder_.Get(id);
  ASSERT_EQ(log.completions.size(), 3u);
  for (const auto& c : log.completions) EXPECT_EQ(c.ids.size(), 4u);
  const ServingStats end = engine->stats();
  EXPECT_EQ(end.generated_tokens, 12);
  EXPECT_GT(end.decode_steps, 0);
}

TEST_F(ServingEngineTest, CreateRefusesMismatchedOptions) {
  ServingOptions o = Options(4);
  auto backend = CpuSequenceBackend::Open(ModelDir(), o.backend);
  ASSERT_TRUE(backend.ok());
  ServingOptions other = o;
  other.backend.num_slots = 8;
  other.backend.max_batch = 8;
  EXPECT_EQ(ServingEngine::Create(std::move(*backend), tokenizer_, other).status().code(), StatusCode::kInvalidArgument);
  auto b2 = CpuSequenceBackend::Open(ModelDir(), o.backend);
  ASSERT_TRUE(b2.ok());
  EXPECT_EQ(ServingEngine::Create(std::move(*b2), nullptr, o).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq::serve
