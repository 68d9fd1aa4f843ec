// The hosted inference API end to end: mq-server and CPU mq-workers as processes on loopback,
// Generate and Score through the server's public API, compared with the engine's own tool and
// the fixture's greedy ids; concurrency, seeded sampling, n > 1, stop strings, cancellation,
// limits and their statuses.
#include <signal.h>

#include <gtest/gtest.h>

#include <atomic>
#include <fstream>
#include <future>
#include <map>
#include <thread>

#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>
#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cluster.h"
#include "health_probe.grpc.pb.h"
#include "mambaquant/v1/inference.grpc.pb.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

struct Completion {
  std::vector<int32_t> ids;
  std::string text;
  std::string finish_reason;
  std::string stop_string;
  std::vector<float> logprobs;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  uint64_t seed = 0;
  int messages = 0;
  bool deltas_valid_utf8 = true;
  std::vector<size_t> boundaries;  // text length after each message
};

struct Outcome {
  grpc::Status status;
  std::map<int32_t, Completion> completions;
  std::string model;
};

bool ValidUtf8(const std::string& s) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    if (n == 0 || i + n > s.size()) return false;
    for (size_t k = 1; k < n; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80) return false;
    i += n;
  }
  return true;
}

Outcome RunGenerate(InferenceService::Stub& stub, const GenerateRequest& req, int cancel_after_messages = -1,
                    absl::Duration deadline = absl::Seconds(120)) {
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + deadline));
  auto reader = stub.Generate(&ctx, req);
  Outcome out;
  GenerateResponse resp;
  int messages = 0;
  while (reader->Read(&resp)) {
    ++messages;
    Completion& c = out.completions[resp.index()];
    c.ids.insert(c.ids.end(), resp.token_ids().begin(), resp.token_ids().end());
    c.text += resp.text();
    c.boundaries.push_back(c.text.size());
    c.deltas_valid_utf8 = c.deltas_valid_utf8 && ValidUtf8(resp.text());
    for (const auto& lp : resp.logprobs()) c.logprobs.push_back(lp.logprob());
    if (c.messages++ == 0) c.seed = resp.seed();
    if (!resp.model().empty()) out.model = resp.model();
    if (!resp.finish_reason().empty()) {
      c.finish_reason = resp.finish_reason();
      c.stop_string = resp.stop_string();
      c.prompt_tokens = resp.prompt_tokens();
      c.completion_tokens = resp.completion_tokens();
    }
    if (cancel_after_messages >= 0 && messages >= cancel_after_messages) ctx.TryCancel();
  }
  out.status = reader->Finish();
  return out;
}

GenerateRequest TextRequest(const std::string& prompt, int max_new_tokens) {
  GenerateRequest req;
  req.set_model("mamba-tiny");
  req.set_prompt(prompt);
  req.set_max_new_tokens(max_new_tokens);
  return req;
}

// A one-token generation of "Hello", retried while the cluster's worker connects (up to ~20 s);
// its outcome is the first that succeeded, or the last failure.
Outcome WarmUp(InferenceService::Stub& stub) {
  Outcome first;
  for (int i = 0; i < 100 && !(first = RunGenerate(stub, TextRequest("Hello", 1), -1, absl::Seconds(10))).status.ok(); ++i)
    absl::SleepFor(absl::Milliseconds(200));
  return first;
}

// `mq-engine generate --json` on the bundled model: the engine's own answer.
nlohmann::json EngineGenerate(const std::string& prompt, int max_tokens, const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv = {MQ_ENGINE_BIN, "generate", "--model", SourceDir() + "/models/mamba-tiny",
                                   "--prompt", prompt, "--max-tokens", std::to_string(max_tokens), "--json"};
  argv.insert(argv.end(), extra.begin(), extra.end());
  std::string out;
  EXPECT_EQ(RunCommand(argv, &out), 0) << out;
  return nlohmann::json::parse(out);
}

// The metric's value for `labels` (e.g. {model="mamba-tiny:1"}) in a /metrics text, or -1.
double MetricValue(const std::string& text, const std::string& name_and_labels) {
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (!absl::StartsWith(line, name_and_labels + " ")) continue;
    double v = 0;
    if (absl::SimpleAtod(line.substr(name_and_labels.size() + 1), &v)) return v;
  }
  return -1;
}

class InferenceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster();
    cluster_->StartServer();
    metrics_port_ = PickFreePort();
    cluster_->StartWorker({"--max-sequences", "8", "--prefill-chunk", "16", "--max-prompt-tokens", "512",
                           "--max-waiting", "2000", "--metrics-listen", absl::StrCat("127.0.0.1:", metrics_port_)});
    cluster_->UploadBundled();
    channel_ = new std::shared_ptr<grpc::Channel>(grpc::CreateChannel(cluster_->address(), grpc::InsecureChannelCredentials()));
    stub_ = InferenceService::NewStub(*channel_).release();
    // Wait until the worker's inference stream is up (the first call loads the model).
    for (int i = 0; i < 100; ++i) {
      Outcome o = RunGenerate(*stub_, TextRequest("Hello", 1), -1, absl::Seconds(10));
      if (o.status.ok()) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete channel_;
    delete cluster_;
  }
  static Cluster* cluster_;
  static int metrics_port_;
  static std::shared_ptr<grpc::Channel>* channel_;
  static InferenceService::Stub* stub_;
};
Cluster* InferenceTest::cluster_ = nullptr;
int InferenceTest::metrics_port_ = 0;
std::shared_ptr<grpc::Channel>* InferenceTest::channel_ = nullptr;
InferenceService::Stub* InferenceTest::stub_ = nullptr;

TEST_F(InferenceTest, GreedyGenerationEqualsTheEngineTool) {
  for (const std::string prompt : {"The meaning of life is", "Once upon a time", "In 1905, the", "Hello"}) {
    const nlohmann::json want = EngineGenerate(prompt, 24);
    Outcome o = RunGenerate(*stub_, TextRequest(prompt, 24));
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    ASSERT_EQ(o.completions.size(), 1u);
    const Completion& c = o.completions[0];
    EXPECT_EQ(o.model, "mamba-tiny:1");
    // The engine tool prints the continuation without the eos; the service includes the token
    // that ended it (finish_reason eos) but not its text.
    std::vector<int32_t> ids = c.ids;
    if (c.finish_reason == "eos") ids.pop_back();
    EXPECT_EQ(ids, want["ids"].get<std::vector<int32_t>>()) << prompt;
    EXPECT_EQ(c.text, want["text"].get<std::string>()) << prompt;
    EXPECT_EQ(c.prompt_tokens, static_cast<int32_t>(want["prompt_ids"].size()));
    EXPECT_EQ(c.completion_tokens, static_cast<int32_t>(c.ids.size()));
    EXPECT_TRUE(c.finish_reason == "eos" || c.finish_reason == "length") << c.finish_reason;
  }
}

TEST_F(InferenceTest, GreedyIdsEqualTheTransformersFixture) {
  // tests/data/mamba-tiny-reference.safetensors: generate_prompt_ids [2,16] and
  // generate_greedy_ids [2, ≤48] (HF transformers, 32 new tokens, eos 0, padded with 1).
  const std::string file = ReadFileOrDie(SourceDir() + "/tests/data/mamba-tiny-reference.safetensors");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  auto header = nlohmann::json::parse(file.substr(8, n));
  auto tensor = [&](const std::string& name, std::vector<int64_t>* shape) {
    const auto& e = header[name];
    EXPECT_EQ(e["dtype"], "I64");
    *shape = e["shape"].get<std::vector<int64_t>>();
    const uint64_t begin = e["data_offsets"][0];
    std::vector<int64_t> v((e["data_offsets"][1].get<uint64_t>() - begin) / 8);
    std::memcpy(v.data(), file.data() + 8 + n + begin, v.size() * 8);
    return v;
  };
  std::vector<int64_t> pshape, gshape;
  const std::vector<int64_t> prompts = tensor("generate_prompt_ids", &pshape);
  const std::vector<int64_t> greedy = tensor("generate_greedy_ids", &gshape);
  ASSERT_EQ(pshape.size(), 2u);
  for (int64_t b = 0; b < pshape[0]; ++b) {
    GenerateRequest req;
    req.set_model("mamba-tiny");
    for (int64_t i = 0; i < pshape[1]; ++i) req.mutable_prompt_tokens()->add_ids(static_cast<int32_t>(prompts[b * pshape[1] + i]));
    req.set_max_new_tokens(32);
    Outcome o = RunGenerate(*stub_, req);
    ASSERT_TRUE(o.status.ok()) << o.status.error_message();
    std::vector<int32_t> want;
    for (int64_t i = pshape[1]; i < gshape[1]; ++i) {
      want.push_back(static_cast<int32_t>(greedy[b * gshape[1] + i]));
      if (want.back() == 0) break;  // eos; the rest is padding
    }
    EXPECT_EQ(o.completions[0].ids, want) << "prompt " << b;
  }
}

TEST_F(InferenceTest, SixteenConcurrentPromptsEachEqualTheirAloneResult) {
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < 16; ++i) {
    // Different lengths, some over the 16-token prefill chunk.
    std::string prompt = absl::StrCat("Story ", i, ":");
    for (int k = 0; k < i % 5; ++k) prompt += " the quick brown fox jumps over the lazy dog";
    reqs.push_back(TextRequest(prompt, 20 + i));
  }
  std::vector<Outcome> alone;
  for (const auto& r : reqs) alone.push_back(RunGenerate(*stub_, r));
  std::vector<Outcome> together(reqs.size());
  std::vector<std::thread> threads;
  for (size_t i = 0; i < reqs.size(); ++i) threads.emplace_back([&, i] { together[i] = RunGenerate(*stub_, reqs[i]); });
  for (auto& t : threads) t.join();
  for (size_t i = 0; i < reqs.size(); ++i) {
    ASSERT_TRUE(together[i].status.ok()) << together[i].status.error_message();
    EXPECT_EQ(together[i].completions[0].ids, alone[i].completions[0].ids) << "prompt " << i;
    EXPECT_EQ(together[i].completions[0].text, alone[i].completions[0].text) << "prompt " << i;
  }
}

TEST_F(InferenceTest, SeededSamplingRepeatsAndNCompletionsEqualSeparateSeededRequests) {
  GenerateRequest req = TextRequest("The weather today", 24);
  req.mutable_sampling()->set_temperature(0.9f);
  req.mutable_sampling()->set_top_k(50);
  req.mutable_sampling()->set_top_p(0.95f);
  req.mutable_sampling()->set_seed(1234);
  req.set_ignore_eos(true);
  Outcome a = RunGenerate(*stub_, req), b = RunGenerate(*stub_, req);
  ASSERT_TRUE(a.status.ok() && b.status.ok());
  EXPECT_EQ(a.completions[0].ids, b.completions[0].ids);
  EXPECT_EQ(a.completions[0].seed, 1234u);
  // The engine tool with the same seed draws the same tokens.
  const nlohmann::json engine = EngineGenerate("The weather today", 24, {"--temperature", "0.9", "--top-k", "50", "--top-p", "0.95", "--seed", "1234"});
  std::vector<int32_t> engine_ids = engine["ids"].get<std::vector<int32_t>>();
  std::vector<int32_t> ours = a.completions[0].ids;
  ours.resize(std::min(ours.size(), engine_ids.size()));
  EXPECT_EQ(ours, engine_ids);

  GenerateRequest nreq = req;
  nreq.set_n(3);
  Outcome n = RunGenerate(*stub_, nreq);
  ASSERT_TRUE(n.status.ok()) << n.status.error_message();
  ASSERT_EQ(n.completions.size(), 3u);
  std::set<std::vector<int32_t>> distinct;
  for (int i = 0; i < 3; ++i) {
    GenerateRequest one = req;
    one.mutable_sampling()->set_seed(1234 + static_cast<uint64_t>(i));
    Outcome s = RunGenerate(*stub_, one);
    ASSERT_TRUE(s.status.ok());
    EXPECT_EQ(n.completions[i].ids, s.completions[0].ids) << "completion " << i;
    EXPECT_EQ(n.completions[i].text, s.completions[0].text) << "completion " << i;
    EXPECT_EQ(n.completions[i].seed, 1234u + static_cast<uint64_t>(i));
    distinct.insert(n.completions[i].ids);
  }
  EXPECT_GT(distinct.size(), 1u) << "three seeds gave one continuation";
}

TEST_F(InferenceTest, StopStringSplitAcrossTokensStopsAndDeltasConcatenate) {
  GenerateRequest req = TextRequest("Once upon a time", 40);
  req.set_ignore_eos(true);
  Outcome full = RunGenerate(*stub_, req);
  ASSERT_TRUE(full.status.ok());
  const Completion& f = full.completions[0];
  EXPECT_TRUE(f.deltas_valid_utf8);
  // A stop string made of the end of one token's text and the start of the next one's: token
  // boundaries are where the deltas of the unstopped run end (one token per message here).
  std::string stop;
  size_t cut = std::string::npos;
  for (size_t k = 1; k + 1 < f.boundaries.size() && stop.empty(); ++k) {
    const size_t b = f.boundaries[k];
    if (f.boundaries[k - 1] + 2 > b || f.boundaries[k + 1] < b + 2) continue;  // both sides ≥ 2 bytes
    const std::string candidate = f.text.substr(b - 2, 4);
    if (f.text.find(candidate) == b - 2 && ValidUtf8(candidate)) {
      stop = candidate;
      cut = b - 2;
    }
  }
  ASSERT_FALSE(stop.empty()) << "no stop string spanning two tokens found in: " << f.text;
  GenerateRequest sreq = req;
  sreq.add_stop(stop);
  Outcome s = RunGenerate(*stub_, sreq);
  ASSERT_TRUE(s.status.ok());
  const Completion& c = s.completions[0];
  EXPECT_EQ(c.finish_reason, "stop");
  EXPECT_EQ(c.stop_string, stop);
  EXPECT_EQ(c.text, f.text.substr(0, cut));
  EXPECT_TRUE(c.deltas_valid_utf8);
  EXPECT_LT(c.ids.size(), f.ids.size());
}

TEST_F(InferenceTest, LogprobsOfGenerationEqualScoreOfTheSameTokens) {
  GenerateRequest req = TextRequest("The history of", 12);
  req.set_logprobs(3);
  req.set_ignore_eos(true);
  Outcome g = RunGenerate(*stub_, req);
  ASSERT_TRUE(g.status.ok());
  const Completion& c = g.completions[0];
  ASSERT_EQ(c.logprobs.size(), c.ids.size());
  // Score the prompt + continuation: the positions of the generated tokens must agree.
  const nlohmann::json engine = EngineGenerate("The history of", 1);
  std::vector<int32_t> ids = engine["prompt_ids"].get<std::vector<int32_t>>();
  const size_t prompt_len = ids.size();
  ids.insert(ids.end(), c.ids.begin(), c.ids.end());
  ScoreRequest sreq;
  sreq.set_model("mamba-tiny");
  sreq.mutable_tokens()->mutable_ids()->Assign(ids.begin(), ids.end());
  sreq.set_top_logprobs(2);
  grpc::ClientContext ctx;
  ScoreResponse sresp;
  ASSERT_TRUE(stub_->Score(&ctx, sreq, &sresp).ok());
  ASSERT_EQ(sresp.logprobs_size(), static_cast<int>(ids.size() - 1));
  double nll = 0;
  for (const auto& lp : sresp.logprobs()) nll -= lp.logprob();
  EXPECT_NEAR(sresp.mean_nll(), nll / sresp.logprobs_size(), 1e-6);
  EXPECT_NEAR(sresp.perplexity(), std::exp(sresp.mean_nll()), 1e-6 * sresp.perplexity());
  for (size_t i = 0; i < c.ids.size(); ++i) {
    const auto& lp = sresp.logprobs(static_cast<int>(prompt_len - 1 + i));
    EXPECT_EQ(lp.token_id(), c.ids[i]);
    EXPECT_NEAR(lp.logprob(), c.logprobs[i], 2e-4) << "position " << i;
    ASSERT_EQ(lp.top_size(), 2);
    EXPECT_GE(lp.top(0).logprob(), lp.top(1).logprob());
  }
}

TEST_F(InferenceTest, CancelledCallsFreeTheirSlotsAndLeakNothing) {
  auto metrics = [&] { return HttpGet(metrics_port_, "/metrics", absl::Seconds(5)); };
  const int64_t rss_before = ProcStatusKb(cluster_->worker(0).pid(), "VmRSS");
  // 1,000 calls: cancelled before, during and after their first tokens, 32 at a time.
  std::atomic<int> next{0}, ok_or_cancelled{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 32; ++t)
    threads.emplace_back([&] {
      for (int i = next++; i < 1000; i = next++) {
        GenerateRequest req = TextRequest(absl::StrCat("Cancel me ", i), 4096);
        req.set_ignore_eos(true);
        Outcome o = RunGenerate(*stub_, req, i % 4);  // 0: at once, 1..3: after that many messages
        if (o.status.ok() || o.status.error_code() == grpc::StatusCode::CANCELLED) ++ok_or_cancelled;
      }
    });
  for (auto& th : threads) th.join();
  EXPECT_EQ(ok_or_cancelled.load(), 1000);
  ASSERT_TRUE(cluster_->server().running()) << cluster_->ServerLog();
  ASSERT_TRUE(cluster_->worker(0).running()) << cluster_->WorkerLog(0);
  // Every slot back within moments (one decode step each), nothing waiting.
  double running = -1, waiting = -1, free_slots = -1;
  for (int i = 0; i < 50; ++i) {
    const std::string m = metrics();
    running = MetricValue(m, "mq_worker_serving_sequences_running{model=\"mamba-tiny:1\"}");
    waiting = MetricValue(m, "mq_worker_serving_sequences_waiting{model=\"mamba-tiny:1\"}");
    free_slots = MetricValue(m, "mq_worker_serving_free_slots{model=\"mamba-tiny:1\"}");
    if (running == 0 && waiting == 0 && free_slots == 8) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(running, 0);
  EXPECT_EQ(waiting, 0);
  EXPECT_EQ(free_slots, 8);
  const int64_t rss_after = ProcStatusKb(cluster_->worker(0).pid(), "VmRSS");
  EXPECT_LT(rss_after - rss_before, 64 * 1024) << "worker RSS grew from " << rss_before << " to " << rss_after << " KiB";
  // And the worker still answers exactly as before.
  const nlohmann::json want = EngineGenerate("Hello", 16);
  Outcome o = RunGenerate(*stub_, TextRequest("Hello", 16));
  ASSERT_TRUE(o.status.ok());
  std::vector<int32_t> ids = o.completions[0].ids;
  if (o.completions[0].finish_reason == "eos") ids.pop_back();
  EXPECT_EQ(ids, want["ids"].get<std::vector<int32_t>>());
}

TEST_F(InferenceTest, DeadlineEndsTheCallWithDeadlineExceeded) {
  GenerateRequest req = TextRequest("Forever", 4096);
  req.set_ignore_eos(true);
  Outcome o = RunGenerate(*stub_, req, -1, absl::Milliseconds(300));
  EXPECT_EQ(o.status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
}

TEST_F(InferenceTest, EveryLimitAnswersItsStatus) {
  auto code = [&](const GenerateRequest& r) { return RunGenerate(*stub_, r, -1, absl::Seconds(30)).status; };
  {
    GenerateRequest r = TextRequest("x", 8);
    r.set_model("no-such-model");
    EXPECT_EQ(code(r).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  {
    GenerateRequest r = TextRequest("x", 5000);
    grpc::Status s = code(r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "max_new_tokens")) << s.error_message();
  }
  {
    GenerateRequest r = TextRequest("x", 8);
    r.mutable_sampling()->set_temperature(-1);
    grpc::Status s = code(r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "temperature")) << s.error_message();
  }
  {
    GenerateRequest r = TextRequest("x", 8);
    r.clear_prompt();
    r.mutable_prompt_tokens()->add_ids(5000);  // the tiny vocabulary has 4096 tokens
    EXPECT_EQ(code(r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    GenerateRequest r = TextRequest("x", 8);
    r.clear_prompt();
    for (int i = 0; i < 600; ++i) r.mutable_prompt_tokens()->add_ids(100);  // over --max-prompt-tokens 512
    grpc::Status s = code(r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "prompt")) << s.error_message();
  }
  {
    std::string long_text;
    for (int i = 0; i < 200; ++i) long_text += "alpha beta gamma delta ";  // > 512 tokens as text
    grpc::Status s = code(TextRequest(long_text, 8));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(absl::StrContains(s.error_message(), "limit")) << s.error_message();
  }
  {
    GenerateRequest r = TextRequest("x", 8);
    r.set_n(9);  // over the worker's 8 state slots
    EXPECT_EQ(code(r).error_code(), grpc::StatusCode::UNAVAILABLE);
  }
  {
    GenerateRequest r = TextRequest("x", 8);
    r.set_n(17);  // over the API's 16
    EXPECT_EQ(code(r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
  {
    GenerateRequest r;
    r.set_model("mamba-tiny");
    EXPECT_EQ(code(r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);  // no prompt
  }
  {
    // A prompt near the 8 MiB message limit is refused by the server; the worker's stream (which
    // carries every call of the worker) never sees it, and the worker keeps serving.
    grpc::Status s = code(TextRequest(std::string(7 << 20, 'a'), 8));
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    ScoreRequest sr;
    sr.set_model("mamba-tiny");
    sr.set_text(std::string(7 << 20, 'b'));
    grpc::ClientContext ctx;
    ScoreResponse resp;
    EXPECT_EQ(stub_->Score(&ctx, sr, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_TRUE(RunGenerate(*stub_, TextRequest("Still here", 4)).status.ok());
  }
}

TEST(InferenceLimits, FullQueueIsResourceExhaustedAndNoWorkerIsUnavailable) {
  Cluster c;
  c.StartServer();
  c.UploadBundled();
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  GenerateRequest req = TextRequest("x", 8);
  EXPECT_EQ(RunGenerate(*stub, req, -1, absl::Seconds(10)).status.error_code(), grpc::StatusCode::UNAVAILABLE);

  c.StartWorker({"--max-sequences", "1", "--max-waiting", "1"});
  for (int i = 0; i < 100 && !RunGenerate(*stub, TextRequest("Hi", 1), -1, absl::Seconds(10)).status.ok(); ++i)
    absl::SleepFor(absl::Milliseconds(200));
  // One running, one waiting, the third has no room.
  GenerateRequest long_req = TextRequest("Busy", 4096);
  long_req.set_ignore_eos(true);
  std::vector<grpc::ClientContext> ctxs(3);
  std::vector<std::unique_ptr<grpc::ClientReader<GenerateResponse>>> readers;
  GenerateResponse resp;
  readers.push_back(stub->Generate(&ctxs[0], long_req));
  ASSERT_TRUE(readers[0]->Read(&resp));  // running
  readers.push_back(stub->Generate(&ctxs[1], long_req));
  absl::SleepFor(absl::Milliseconds(300));  // queued on the worker
  readers.push_back(stub->Generate(&ctxs[2], long_req));
  EXPECT_FALSE(readers[2]->Read(&resp));
  grpc::Status s = readers[2]->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "queue")) << s.error_message();
  for (int i = 0; i < 2; ++i) {
    ctxs[i].TryCancel();
    while (readers[i]->Read(&resp)) {
    }
    readers[i]->Finish();
  }
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// A name:version deleted and registered again with other files is another model: the worker must
// not answer with the weights it loaded under that name before (it looked models up by name).
// Now a deleted version is unloaded from the workers and its number is never given again.
TEST(InferenceModelIdentity, AVersionRegisteredAgainServesItsNewFiles) {
  Cluster c;
  c.StartServer();
  c.StartWorker();
  c.UploadBundled();
  std::string out;
  ASSERT_EQ(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--preset", "mambaquant", "--bits", "w8a8", "--calib",
                     "calib", "--samples", "16", "--seq-len", "64", "--output-name", "qtiny", "--wait"},
                    &out),
            0)
      << out;
  const std::string qdir = c.dir().Sub("qtiny");
  ASSERT_EQ(c.Mqctl({"models", "download", "qtiny", "--out", qdir}, &out), 0) << out;
  ASSERT_EQ(c.Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", "swap"}, &out), 0) << out;
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  auto score = [&](const std::string& model) {
    ScoreRequest r;
    r.set_model(model);
    r.set_text("The history of the city begins in the first century.");
    ScoreResponse resp;
    for (int i = 0; i < 100; ++i) {  // the worker may still be connecting
      grpc::ClientContext ctx;
      ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(30)));
      grpc::Status st = stub->Score(&ctx, r, &resp);
      if (st.ok()) return resp.mean_nll();
      if (st.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      absl::SleepFor(absl::Milliseconds(200));
    }
    ADD_FAILURE() << "score " << model << " failed";
    return -1.0;
  };
  const double float_nll = score("swap:1");  // loads the float weights under swap:1
  const double quant_nll = score("qtiny:1");
  ASSERT_NE(float_nll, quant_nll);
  ASSERT_EQ(score("mamba-tiny:1"), float_nll);
  auto loaded = [&](const std::string& model) {
    std::string w;
    if (c.Mqctl({"workers", "list", "--json"}, &w) != 0) return true;
    return w.find("\"" + model + "\"") != std::string::npos;
  };
  ASSERT_TRUE(loaded("swap:1"));
  ASSERT_EQ(c.Mqctl({"models", "delete", "swap:1"}, &out), 0) << out;
  // The worker drops a deleted model at once (it kept it until eviction or a restart).
  bool dropped = false;
  for (int i = 0; i < 100 && !(dropped = !loaded("swap:1")); ++i) absl::SleepFor(absl::Milliseconds(100));
  EXPECT_TRUE(dropped) << c.WorkerLog(0);
  EXPECT_TRUE(loaded("mamba-tiny:1"));
  // The registry no longer gives a deleted number to other content (it did, and the worker then
  // served the weights it had loaded under the name): swap:1 stays gone, the new files are swap:2.
  EXPECT_NE(c.MqctlWithErrors({"models", "upload", qdir, "--name", "swap", "--version", "1"}, &out), 0);
  EXPECT_NE(out.find("versions only increase, the next version of swap is 2"), std::string::npos) << out;
  ASSERT_EQ(c.Mqctl({"models", "upload", qdir, "--name", "swap"}, &out), 0) << out;
  EXPECT_NE(out.find("swap:2"), std::string::npos) << out;
  EXPECT_EQ(score("swap"), quant_nll);  // the new files
  EXPECT_EQ(score("mamba-tiny:1"), float_nll);
  // mqctl generate with stdout and stderr in one pipe: the summary starts its own line (it was
  // glued to the text), and the text itself is unchanged when stdout goes elsewhere.
  {
    std::string both, only_text;
    const std::vector<std::string> gen = {"generate", "--model", "mamba-tiny", "--prompt", "The city", "--max-new-tokens", "3", "--temperature", "0",
                                          "--ignore-eos"};
    ASSERT_EQ(c.MqctlWithErrors(gen, &both), 0) << both;
    ASSERT_EQ(c.Mqctl(gen, &only_text), 0) << only_text;
    ASSERT_FALSE(only_text.empty());
    if (only_text.back() != '\n') EXPECT_NE(both.find(only_text + "\nfinish="), std::string::npos) << both;
    EXPECT_EQ(only_text.find("finish="), std::string::npos) << only_text;
  }
  {
    ScoreRequest r;
    r.set_model("swap:1");
    r.set_text("gone");
    ScoreResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Score(&ctx, r, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

// --preload: the worker loads its models at start, with every state slot and buffer, and exits
// saying why when one is unknown or does not fit, instead of failing later under load.
TEST(InferencePreload, WorkerPreloadsOrRefusesToStart) {
  Cluster c;
  c.StartServer();
  c.UploadBundled();
  const int metrics_port = PickFreePort();
  c.StartWorker({"--preload", "mamba-tiny", "--metrics-listen", absl::StrCat("127.0.0.1:", metrics_port)});
  double loaded = -1;
  for (int i = 0; i < 100 && loaded != 1; ++i) {
    loaded = MetricValue(HttpGet(metrics_port, "/metrics", absl::Seconds(5)), "mq_worker_models_loaded");
    if (loaded != 1) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(loaded, 1) << c.WorkerLog(0);
  // The operator sees it: mqctl workers list / server status (ClusterService).
  {
    std::string out;
    ASSERT_EQ(c.Mqctl({"workers", "list", "--json"}, &out), 0) << out;
    const auto j = nlohmann::json::parse(out);
    ASSERT_EQ(j["workers"].size(), 1u) << out;
    const auto& w = j["workers"][0];
    EXPECT_EQ(w["inference_connected"], true);
    EXPECT_EQ(w["capacity"]["device"], "cpu");
    EXPECT_EQ(w["load"]["models"][0]["model"], "mamba-tiny:1");
    ASSERT_EQ(c.Mqctl({"server", "status", "--json"}, &out), 0) << out;
    const auto st = nlohmann::json::parse(out);
    EXPECT_EQ(st["workers"], 1);
    EXPECT_EQ(st["inference_workers"], 1);
    EXPECT_EQ(st["loaded_models"][0], "mamba-tiny:1");
    ASSERT_EQ(c.Mqctl({"workers", "list"}, &out), 0);
    EXPECT_TRUE(absl::StrContains(out, "mamba-tiny:1 (0/0)")) << out;
  }

  const int unknown = c.StartWorker({"--preload", "no-such-model"});
  EXPECT_EQ(c.worker(unknown).Wait(absl::Seconds(30)), 1);
  EXPECT_TRUE(absl::StrContains(c.WorkerLog(unknown), "--preload no-such-model")) << c.WorkerLog(unknown);

  // 65536 state slots of mamba-tiny are about 1.3 GB; a 16 MB budget cannot hold them.
  const int too_big = c.StartWorker({"--preload", "mamba-tiny", "--max-sequences", "65536", "--max-batch", "64",
                                     "--model-memory-budget", std::to_string(16 << 20)});
  EXPECT_EQ(c.worker(too_big).Wait(absl::Seconds(60)), 1);
  EXPECT_TRUE(absl::StrContains(c.WorkerLog(too_big), "RESOURCE_EXHAUSTED")) << c.WorkerLog(too_big);
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// The serving metrics are valid Prometheus exposition (promtool, from Debian's prometheus package)
// on the server and the worker, and count exactly the work done.
TEST(InferenceMetrics, PromtoolAcceptsThemAndTheyCountTheTokensServed) {
  std::string version;
  if (RunCommand({"/bin/sh", "-c", "command -v promtool"}, &version) != 0)
    GTEST_SKIP() << "promtool not installed (Debian package prometheus, in deploy/debian-packages.txt)";
  const int server_metrics = PickFreePort(), worker_metrics = PickFreePort();
  Cluster c({"--lease-seconds", "2", "--metrics-listen", absl::StrCat("127.0.0.1:", server_metrics)});
  c.StartServer();
  c.UploadBundled();
  c.StartWorker({"--metrics-listen", absl::StrCat("127.0.0.1:", worker_metrics)});
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  Outcome first = WarmUp(*stub);
  ASSERT_TRUE(first.status.ok());
  int64_t tokens = static_cast<int64_t>(first.completions[0].ids.size());
  for (int i = 0; i < 5; ++i) {
    GenerateRequest r = TextRequest(absl::StrCat("Count ", i), 7);
    r.set_ignore_eos(true);
    Outcome o = RunGenerate(*stub, r);
    ASSERT_TRUE(o.status.ok());
    tokens += static_cast<int64_t>(o.completions[0].ids.size());
  }
  const std::string server = HttpGet(server_metrics, "/metrics", absl::Seconds(5));
  const std::string worker = HttpGet(worker_metrics, "/metrics", absl::Seconds(5));
  for (const auto& [name, response] : {std::pair<std::string, std::string>{"server", server}, {"worker", worker}}) {
    const size_t body = response.find("\r\n\r\n");
    ASSERT_NE(body, std::string::npos) << name << ": " << response;
    const std::string path = c.dir().Sub(name + ".prom");
    { std::ofstream(path) << response.substr(body + 4); }
    std::string out;
    EXPECT_EQ(RunCommand({"/bin/sh", "-c", "promtool check metrics < " + path + " 2>&1"}, &out), 0) << name << ":\n" << out;
  }
  EXPECT_EQ(MetricValue(server, "mq_serving_generation_tokens_total{model=\"mamba-tiny:1\"}"), static_cast<double>(tokens));
  EXPECT_EQ(MetricValue(server, "mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"length\"}"), 6);
  EXPECT_EQ(MetricValue(server, "mq_serving_e2e_request_latency_seconds_count{model=\"mamba-tiny:1\"}"), 6);
  EXPECT_EQ(MetricValue(server, "mq_serving_time_to_first_token_seconds_count{model=\"mamba-tiny:1\"}"), 6);
  EXPECT_EQ(MetricValue(worker, "mq_worker_device_info{device=\"cpu\",device_name=\"" +
                                    [&] {
                                      const size_t a = worker.find("mq_worker_device_info{device=\"cpu\",device_name=\"");
                                      if (a == std::string::npos) return std::string("?");
                                      const size_t from = a + std::string("mq_worker_device_info{device=\"cpu\",device_name=\"").size();
                                      return worker.substr(from, worker.find('"', from) - from);
                                    }() + "\"}"),
            1);
  // Decode steps: a call's first token comes from its prefill, each later one from a step; the
  // calls ran one after another, so five calls of 7 tokens took 5 × 6 steps of one sequence.
  EXPECT_EQ(MetricValue(worker, "mq_worker_serving_decode_batch_size_count{model=\"mamba-tiny:1\"}"), 30);
  EXPECT_EQ(MetricValue(worker, "mq_worker_serving_decode_batch_size_sum{model=\"mamba-tiny:1\"}"), 30);
  // A call the client cancels after its first message counts as CANCELLED, with its latency.
  GenerateRequest r = TextRequest("Cancel me", 4000);
  r.set_ignore_eos(true);
  Outcome o = RunGenerate(*stub, r, 1);
  ASSERT_EQ(o.status.error_code(), grpc::StatusCode::CANCELLED) << o.status.error_message();
  // Scrapes until `metric` reaches 1 (the server records a call's end asynchronously), leaving
  // the last scrape in `after`.
  std::string after;
  auto wait_for_one = [&](const std::string& metric) {
    double v = 0;
    for (int i = 0; i < 50 && v < 1; ++i) {
      absl::SleepFor(absl::Milliseconds(100));
      after = HttpGet(server_metrics, "/metrics", absl::Seconds(5));
      v = MetricValue(after, metric);
    }
    return v;
  };
  EXPECT_EQ(wait_for_one("mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"CANCELLED\"}"), 1) << after;
  EXPECT_EQ(MetricValue(after, "mq_serving_e2e_request_latency_seconds_count{model=\"mamba-tiny:1\"}"), 7);
  EXPECT_EQ(MetricValue(after, "mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"length\"}"), 6);

  // A call is counted once however many completions it has (it once counted each).
  GenerateRequest three = TextRequest("Three ways", 3);
  three.set_ignore_eos(true);
  three.set_n(3);
  ASSERT_TRUE(RunGenerate(*stub, three).status.ok());
  // A call past its deadline is DEADLINE_EXCEEDED in both counters (it was counted CANCELLED).
  GenerateRequest slow = TextRequest("Too slow", 4000);
  slow.set_ignore_eos(true);
  ASSERT_EQ(RunGenerate(*stub, slow, -1, absl::Milliseconds(300)).status.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED);
  // Score refused (unknown model) and answered: both counted (refusals once were not).
  {
    ScoreRequest sr;
    sr.set_model("no-such-model");
    sr.set_text("hello world");
    ScoreResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Score(&ctx, sr, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
  EXPECT_EQ(wait_for_one("mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"DEADLINE_EXCEEDED\"}"), 1) << after;
  EXPECT_EQ(MetricValue(after, "mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"length\"}"), 7);
  EXPECT_EQ(MetricValue(after, "mq_serving_requests_total{model=\"mamba-tiny:1\",outcome=\"CANCELLED\"}"), 1);
  EXPECT_EQ(MetricValue(after, "mq_serving_e2e_request_latency_seconds_count{model=\"mamba-tiny:1\"}"), 9);
  EXPECT_EQ(MetricValue(after, "mq_serving_requests_total{model=\"\",outcome=\"NOT_FOUND\"}"), 1) << after;
  EXPECT_EQ(MetricValue(after, "mq_rpc_requests_total{code=\"DEADLINE_EXCEEDED\",method=\"/mambaquant.v1.InferenceService/Generate\"}"), 1)
      << after;
  // Made-up method paths count as one "unknown" method: each once added its own label value
  // (12 series a path, for ever; 3000 calls made the page 74 MB).
  for (int i = 0; i < 5; ++i) {
    grpc::GenericStub generic(channel);
    grpc::ClientContext ctx;
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(10)));
    grpc::Slice empty("");
    grpc::ByteBuffer req(&empty, 1), resp;
    std::promise<grpc::Status> done;
    generic.UnaryCall(&ctx, absl::StrCat("/evil.Svc/Method", i), grpc::StubOptions(), &req, &resp,
                      [&](grpc::Status s) { done.set_value(s); });
    EXPECT_EQ(done.get_future().get().error_code(), grpc::StatusCode::UNIMPLEMENTED);
  }
  const std::string unknown = HttpGet(server_metrics, "/metrics", absl::Seconds(5));
  EXPECT_EQ(MetricValue(unknown, "mq_rpc_requests_total{code=\"UNIMPLEMENTED\",method=\"unknown\"}"), 5) << unknown;
  EXPECT_EQ(unknown.find("evil.Svc"), std::string::npos);
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// Health tells the truth about inference: the inference services are NOT_SERVING while no worker
// can take a call, SERVING once one is connected, NOT_SERVING again when it dies; the process's
// own health stays SERVING throughout.
TEST(InferenceHealth, InferenceServicesServeOnlyWithAWorker) {
  Cluster c;
  c.StartServer();
  c.UploadBundled();
  auto wait_for = [&](const std::string& service, int want) {
    for (int i = 0; i < 200; ++i) {
      if (HealthStatus(c.address(), service) == want) return true;
      absl::SleepFor(absl::Milliseconds(50));
    }
    return false;
  };
  constexpr int kServing = 1, kNotServing = 2;
  EXPECT_TRUE(wait_for("", kServing));
  EXPECT_TRUE(wait_for("mambaquant.v1.InferenceService", kNotServing));
  EXPECT_TRUE(wait_for("inference.GRPCInferenceService", kNotServing));
  const int w = c.StartWorker();
  EXPECT_TRUE(wait_for("mambaquant.v1.InferenceService", kServing)) << c.WorkerLog(w);
  EXPECT_TRUE(wait_for("inference.GRPCInferenceService", kServing));
  c.worker(w).Kill();
  EXPECT_TRUE(wait_for("mambaquant.v1.InferenceService", kNotServing));
  EXPECT_EQ(HealthStatus(c.address(), ""), kServing);
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// SIGTERM on a worker (a rolling update) once cut every stream at once with UNAVAILABLE: now the
// worker reports itself draining, the server routes nothing new to it, and the calls it runs finish
// (up to --drain-seconds) before it leaves.
TEST(InferenceDrain, SigtermLetsRunningGenerationsFinish) {
  Cluster c;
  c.StartServer();
  c.UploadBundled();
  const int w = c.StartWorker({"--drain-seconds", "60"});
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  Outcome warm = WarmUp(*stub);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  // A long generation; SIGTERM once it has streamed its first tokens.
  GenerateRequest r = TextRequest("A long story", 4000);
  r.set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(120)));
  auto reader = stub->Generate(&ctx, r);
  GenerateResponse resp;
  int64_t tokens = 0;
  std::string finish;
  ASSERT_TRUE(reader->Read(&resp));
  tokens += resp.token_ids_size();
  c.worker(w).Signal(SIGTERM);
  // Meanwhile a new call finds no worker to take it (the only one is draining).
  bool refused = false;
  for (int i = 0; i < 100 && !refused; ++i) {
    Outcome o = RunGenerate(*stub, TextRequest("New call", 2), -1, absl::Seconds(10));
    refused = o.status.error_code() == grpc::StatusCode::UNAVAILABLE &&
              o.status.error_message().find("draining") != std::string::npos;
    if (!refused) absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_TRUE(refused) << c.WorkerLog(w);
  while (reader->Read(&resp)) {
    tokens += resp.token_ids_size();
    if (!resp.finish_reason().empty()) finish = resp.finish_reason();
  }
  grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message() << "\n" << c.WorkerLog(w);
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(tokens, 4000);
  EXPECT_EQ(c.worker(w).Wait(absl::Seconds(30)), 0) << c.WorkerLog(w);
  EXPECT_NE(c.WorkerLog(w).find("drained; leaving"), std::string::npos) << c.WorkerLog(w);
  // It left by closing its stream the orderly way: no reconnect attempt, and the server failed
  // no call as lost when it detached.
  EXPECT_EQ(c.WorkerLog(w).find("reconnecting"), std::string::npos) << c.WorkerLog(w);
  EXPECT_NE(c.ServerLog().find("calls_failed=0"), std::string::npos) << c.ServerLog();
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// gRPC 1.51 inflates a compressed message whole before comparing it with the 8 MiB limit: a
// ~1 MB gzip request once made the server allocate 1 GiB, without a token on the health service.
// The server takes no compressed message (ApplyServerLimits); a client that compresses is told so
// before its message is read, and uncompressed calls on the same channel are unaffected.
TEST(MessageLimits, CompressedRequestsAreRefusedBeforeInflating) {
  Cluster c;
  c.StartServer();
  const int64_t hwm_before = ProcStatusKb(c.server().pid(), "VmHWM");
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  // 256 MiB of one byte: ~256 KB on the wire once gzipped.
  GenerateRequest big = TextRequest(std::string(256u << 20, 'a'), 1);
  for (int i = 0; i < 3; ++i) {
    grpc::ClientContext ctx;
    ctx.set_compression_algorithm(GRPC_COMPRESS_GZIP);
    ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
    auto stub = InferenceService::NewStub(channel);
    auto reader = stub->Generate(&ctx, big);
    GenerateResponse resp;
    while (reader->Read(&resp)) {
    }
    const grpc::Status st = reader->Finish();
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
    EXPECT_NE(st.error_message().find("gzip"), std::string::npos) << st.error_message();
  }
  {
    grpc::health::v1::HealthCheckRequest req;
    grpc::health::v1::HealthCheckResponse resp;
    grpc::ClientContext ctx;
    ctx.set_compression_algorithm(GRPC_COMPRESS_DEFLATE);
    const grpc::Status st = grpc::health::v1::Health::NewStub(channel)->Check(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::UNIMPLEMENTED) << st.error_message();
  }
  EXPECT_EQ(HealthStatus(c.address(), ""), 1);  // SERVING: uncompressed calls still work
  const int64_t hwm_after = ProcStatusKb(c.server().pid(), "VmHWM");
  ASSERT_GT(hwm_before, 0);
  // Inflating even one of the requests would have added 256 MiB.
  EXPECT_LT(hwm_after - hwm_before, 64 << 10) << hwm_before << " → " << hwm_after << " KiB";
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// SIGTERM on the server: a generation in flight still finishes, then the workers' streams are
// closed and the server exits at once — an idle worker's open stream held the exit for the whole
// drain timeout (20 s).
TEST(ServerDrain, FinishesRunningGenerationsThenExitsWithoutWaitingForIdleWorkers) {
  Cluster c;
  c.StartServer();
  c.UploadBundled();
  c.StartWorker();
  c.StartWorker();  // the second stays idle
  auto channel = grpc::CreateChannel(c.address(), grpc::InsecureChannelCredentials());
  auto stub = InferenceService::NewStub(channel);
  Outcome warm = WarmUp(*stub);
  ASSERT_TRUE(warm.status.ok()) << warm.status.error_message();
  GenerateRequest r = TextRequest("A story", 300);
  r.set_ignore_eos(true);
  grpc::ClientContext ctx;
  ctx.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(60)));
  auto reader = stub->Generate(&ctx, r);
  GenerateResponse resp;
  ASSERT_TRUE(reader->Read(&resp));
  int64_t tokens = resp.token_ids_size();
  const absl::Time t0 = absl::Now();
  c.server().Signal(SIGTERM);
  std::string finish;
  while (reader->Read(&resp)) {
    tokens += resp.token_ids_size();
    if (!resp.finish_reason().empty()) finish = resp.finish_reason();
  }
  grpc::Status st = reader->Finish();
  EXPECT_TRUE(st.ok()) << st.error_message() << "\n" << c.ServerLog();
  EXPECT_EQ(finish, "length");
  EXPECT_EQ(tokens, 300);
  EXPECT_EQ(c.server().Wait(absl::Seconds(30)), 0) << c.ServerLog();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10)) << c.ServerLog();
}

}  // namespace
}  // namespace mq::test
