// mq-loadgen: a load generator for InferenceService.Generate.
//
// --streams clients (one thread each, synchronous streaming calls on one shared channel) run
// requests back to back. First --warmup requests (default: one per stream) run and are excluded;
// then every stream starts the measurement at the same instant and runs requests until --requests
// (in total) have been started or --duration has passed; requests in flight at that point finish
// and count. Per request: TTFT (call start to the first message carrying a token), ITL (the gap
// before each later token's arrival; a message carrying k tokens gives k samples of gap/k), TPOT
// ((E2E − TTFT) / (tokens − 1)) and E2E (call start to the end of the stream). Totals: output
// tokens/s = tokens received by measured requests / measurement wall time (its start to the last
// measured request's end), requests/s = successful requests / wall time, errors by status code.
// Output: a table on stdout, the same numbers as JSON with --json PATH.
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <latch>
#include <limits>
#include <map>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cli_args.h"
#include "credentials.h"
#include "interrupt_watcher.h"
#include "latency_stats.h"
#include "mambaquant/v1/inference.grpc.pb.h"
#include "mambaquant/v1/registry.grpc.pb.h"
#include "terminal_text.h"

namespace mq::bench {
namespace {

using namespace mambaquant::v1;  // NOLINT
using Clock = std::chrono::steady_clock;
using json = nlohmann::ordered_json;

constexpr int kExitOk = 0;
constexpr int kExitFailed = 1;  // setup failed, or some measured request failed
constexpr int kExitUsage = 2;

constexpr char kUsage[] = R"(mq-loadgen: load generator for InferenceService.Generate

usage: mq-loadgen --model NAME[:VERSION] [options]

connection (as mqctl):
  --server ADDR          server address (default $MQ_SERVER, else localhost:7070)
  --insecure             plaintext without a token (local development servers)
  --token T              bearer token (default: --token-file, else $MQ_TOKEN)
  --token-file F         file holding the token
  --tls-ca F             PEM CA bundle to verify the server (default: system roots)
  --tls-server-name N    name expected in the server certificate
load:
  --streams N            concurrent streaming clients, 1..1024 (default 1)
  --requests N           measured requests in total, 1..10000000 (default: 10 per stream, or
                         unbounded when only --duration is given)
  --duration SECONDS     stop starting requests after this long, 0 < S <= 86400; with --requests,
                         whichever comes first. Requests in flight then finish and count.
  --warmup N             requests run before the measurement and excluded, 0..100000 (default: one
                         per stream)
  --timeout SECONDS      deadline of each request, 0 = none (default 600)
request:
  --prompt-tokens N      prompt of N random token ids (exact length), 1..1000000 (default 128)
  --prompt-id-max N      the ids are drawn from [100, N) (default 20000, lowered to the model's
                         vocab_size from its config.json when that is smaller)
  --prompt TEXT          a text prompt instead (tokenized on the worker; same for every request)
  --max-new-tokens N     tokens to generate per request (default 128)
  --ignore-eos           generate past end-of-sequence, so every output has max-new-tokens tokens
                         (default on; --no-ignore-eos or --ignore-eos=false turns it off)
  --temperature F        sampling temperature (default 0: greedy)
  --seed N               seed of the prompts and of the sampling (request i: seed + i); default 0
output:
  --json PATH            also write the results as JSON to PATH ("-": stdout, the table then goes
                         to stderr)

Times are in milliseconds: TTFT = call start to the first token; ITL = gap between consecutive
token arrivals (per token); TPOT = (E2E - TTFT) / (tokens - 1); E2E = call start to stream end.
Exit status: 0 every measured request succeeded, 1 some failed (or setup failed), 2 usage error,
130 interrupted (Ctrl-C; the results so far are still reported).
)";

struct Config {
  std::string server;
  std::string model;
  int streams = 1;
  int64_t requests = 0;   // measured, in total; INT64_MAX when bounded by --duration only
  double duration_s = 0;  // 0: none
  int64_t warmup = 0;
  double timeout_s = 600;  // 0: none
  bool text_prompt = false;
  std::string prompt;
  int prompt_tokens = 128;
  int32_t prompt_id_lo = 100;
  int32_t prompt_id_hi = 20000;  // exclusive
  bool prompt_id_hi_given = false;
  int max_new_tokens = 128;
  bool ignore_eos = true;
  float temperature = 0;
  uint64_t seed = 0;
  std::string json_path;
};

uint64_t SplitMix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Request `ticket` (0-based over warm-up and measurement): its prompt and sampling seed depend
// only on (--seed, ticket), so runs are reproducible.
GenerateRequest MakeRequest(const Config& cfg, int64_t ticket) {
  GenerateRequest req;
  req.set_model(cfg.model);
  if (cfg.text_prompt) {
    req.set_prompt(cfg.prompt);
  } else {
    auto* ids = req.mutable_prompt_tokens()->mutable_ids();
    ids->Reserve(cfg.prompt_tokens);
    uint64_t state = SplitMix64(cfg.seed ^ SplitMix64(static_cast<uint64_t>(ticket)));
    const uint64_t span = static_cast<uint64_t>(cfg.prompt_id_hi - cfg.prompt_id_lo);
    for (int i = 0; i < cfg.prompt_tokens; ++i) {
      state = SplitMix64(state);
      ids->Add(cfg.prompt_id_lo + static_cast<int32_t>(state % span));
    }
  }
  req.set_max_new_tokens(cfg.max_new_tokens);
  req.set_ignore_eos(cfg.ignore_eos);
  req.mutable_sampling()->set_temperature(cfg.temperature);
  req.mutable_sampling()->set_seed(cfg.seed + static_cast<uint64_t>(ticket));
  return req;
}

double Ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

std::string CodeName(grpc::StatusCode code) { return absl::StatusCodeToString(static_cast<absl::StatusCode>(code)); }

// What one stream measured.
struct StreamStats {
  LatencySamples ttft, itl, tpot, e2e;
  int64_t started = 0;
  int64_t ok = 0;
  int64_t failed = 0;
  int64_t interrupted = 0;  // cancelled by Ctrl-C, excluded
  int64_t output_tokens = 0;
  int64_t prompt_tokens = 0;
  int64_t short_outputs = 0;  // ok, but fewer tokens than max_new_tokens
  std::map<std::string, int64_t> errors;
  std::map<std::string, int64_t> finish_reasons;
  std::optional<Clock::time_point> last_end;
  std::string first_error;
  std::string served_model;
};

// The contexts of the calls in flight, for cancelling them all on Ctrl-C.
class InFlight {
 public:
  explicit InFlight(int streams) : slots_(streams) {}
  void Set(int stream, grpc::ClientContext* ctx) {
    std::lock_guard<std::mutex> lock(mu_);
    slots_[stream] = ctx;
    if (ctx != nullptr && stopped_) ctx->TryCancel();
  }
  void CancelAll() {
    std::lock_guard<std::mutex> lock(mu_);
    stopped_ = true;
    for (grpc::ClientContext* ctx : slots_) {
      if (ctx != nullptr) ctx->TryCancel();
    }
  }

 private:
  std::mutex mu_;
  bool stopped_ = false;
  std::vector<grpc::ClientContext*> slots_;
};

class LoadGen {
 public:
  LoadGen(Config cfg, std::shared_ptr<grpc::Channel> channel, std::string token)
      : cfg_(std::move(cfg)),
        token_(std::move(token)),
        stub_(InferenceService::NewStub(channel)),
        in_flight_(cfg_.streams),
        stats_(cfg_.streams),
        warm_stats_(cfg_.streams) {}

  // Ctrl-C: start no more requests, cancel those in flight.
  void Stop() {
    stop_.store(true);
    in_flight_.CancelAll();
  }
  bool stopped() const { return stop_.load(); }

  // Runs the warm-up, then the measurement. Returns false when every warm-up request failed
  // (the measurement is then skipped).
  bool Run() {
    std::latch warm_done(cfg_.streams);
    std::latch go(1);
    std::vector<std::thread> threads;
    threads.reserve(cfg_.streams);
    for (int s = 0; s < cfg_.streams; ++s) {
      threads.emplace_back([this, s, &warm_done, &go] { StreamMain(s, warm_done, go); });
    }
    warm_done.wait();
    int64_t warm_ok = 0;
    for (const StreamStats& w : warm_stats_) warm_ok += w.ok;
    abort_ = cfg_.warmup > 0 && warm_ok == 0;
    start_ = Clock::now();
    if (cfg_.duration_s > 0) {
      deadline_ = start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(cfg_.duration_s));
    }
    measuring_.store(true);
    go.count_down();
    for (std::thread& t : threads) t.join();
    end_ = Clock::now();
    return !abort_;
  }

  const std::vector<StreamStats>& stats() const { return stats_; }
  const std::vector<StreamStats>& warm_stats() const { return warm_stats_; }
  Clock::time_point start() const { return start_; }
  Clock::time_point end() const { return end_; }

 private:
  void StreamMain(int stream, std::latch& warm_done, std::latch& go) {
    for (;;) {
      if (stop_.load()) break;
      const int64_t t = next_warm_.fetch_add(1);
      if (t >= cfg_.warmup) break;
      RunOne(stream, t, &warm_stats_[stream]);
    }
    warm_done.count_down();
    go.wait();
    if (abort_) return;
    for (;;) {
      if (stop_.load()) break;
      if (deadline_.has_value() && Clock::now() >= *deadline_) break;
      const int64_t t = next_measured_.fetch_add(1);
      if (t >= cfg_.requests) break;
      RunOne(stream, cfg_.warmup + t, &stats_[stream]);
    }
  }

  void RunOne(int stream, int64_t ticket, StreamStats* st) {
    const GenerateRequest req = MakeRequest(cfg_, ticket);
    grpc::ClientContext ctx;
    PrepareClientContext(&ctx, token_, cfg_.timeout_s > 0 ? absl::Seconds(cfg_.timeout_s) : absl::ZeroDuration());
    in_flight_.Set(stream, &ctx);
    ++st->started;
    std::vector<double> itl;
    itl.reserve(static_cast<size_t>(std::min(cfg_.max_new_tokens, 4096)));
    int64_t tokens = 0;
    int32_t prompt_tokens = 0;
    std::string finish;
    std::optional<Clock::time_point> first, last;

    const Clock::time_point start = Clock::now();
    auto reader = stub_->Generate(&ctx, req);
    GenerateResponse resp;
    while (reader->Read(&resp)) {
      const Clock::time_point now = Clock::now();
      const int n = resp.token_ids_size();
      if (n > 0) {
        if (!first.has_value()) {
          first = now;  // tokens beyond the first in this message arrived with it: no ITL sample
        } else {
          const double gap = Ms(now - *last) / n;
          for (int k = 0; k < n; ++k) itl.push_back(gap);
        }
        last = now;
        tokens += n;
      }
      if (!resp.model().empty() && st->served_model.empty()) st->served_model = resp.model();
      if (!resp.finish_reason().empty()) {
        finish = resp.finish_reason();
        prompt_tokens = resp.prompt_tokens();
      }
    }
    const grpc::Status status = reader->Finish();
    const Clock::time_point end = Clock::now();
    in_flight_.Set(stream, nullptr);
    if (measuring_.load()) completed_.fetch_add(1);

    if (stop_.load() && status.error_code() == grpc::StatusCode::CANCELLED) {
      ++st->interrupted;
      return;
    }
    st->last_end = end;
    st->output_tokens += tokens;
    if (!status.ok()) {
      ++st->failed;
      ++st->errors[CodeName(status.error_code())];
      if (st->first_error.empty()) {
        st->first_error = absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
      }
      if (measuring_.load()) failed_.fetch_add(1);
      // A server that refuses at once (down, queue full) is not hammered in a tight loop.
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return;
    }
    ++st->ok;
    st->prompt_tokens += prompt_tokens;
    ++st->finish_reasons[finish.empty() ? "(none)" : finish];
    if (tokens < cfg_.max_new_tokens) ++st->short_outputs;
    st->e2e.Add(Ms(end - start));
    if (first.has_value()) {
      st->ttft.Add(Ms(*first - start));
      if (tokens > 1) st->tpot.Add(Ms(end - *first) / static_cast<double>(tokens - 1));
    }
    for (double v : itl) st->itl.Add(v);
  }

 public:
  // Called by main's progress loop (on a terminal) while Run() is waiting.
  void DrawProgress() {
    if (::isatty(STDERR_FILENO) != 1) return;
    if (measuring_.load()) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
      std::string target = cfg_.requests == std::numeric_limits<int64_t>::max()
                               ? absl::StrFormat("%.0f s", cfg_.duration_s)
                               : absl::StrCat(cfg_.requests, " requests");
      std::fprintf(stderr, "\r\033[Kmeasuring: %lld done (%lld failed) of %s, %.1f s",
                   static_cast<long long>(completed_.load()), static_cast<long long>(failed_.load()), target.c_str(),
                   elapsed);
    } else {
      std::fprintf(stderr, "\r\033[Kwarm-up: %lld of %lld requests started",
                   static_cast<long long>(std::min(next_warm_.load(), cfg_.warmup)),
                   static_cast<long long>(cfg_.warmup));
    }
    std::fflush(stderr);
  }

 private:
  Config cfg_;
  std::string token_;
  std::unique_ptr<InferenceService::Stub> stub_;
  InFlight in_flight_;
  std::vector<StreamStats> stats_;
  std::vector<StreamStats> warm_stats_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> measuring_{false};
  std::atomic<int64_t> next_warm_{0};
  std::atomic<int64_t> next_measured_{0};
  std::atomic<int64_t> completed_{0};
  std::atomic<int64_t> failed_{0};
  bool abort_ = false;  // written before go.count_down(), read after go.wait()
  std::optional<Clock::time_point> deadline_;
  Clock::time_point start_;
  Clock::time_point end_;
};

json SummaryJson(const LatencySummary& s) {
  if (s.count == 0)
    return json{{"count", 0},     {"mean", nullptr}, {"p50", nullptr}, {"p90", nullptr},
                {"p99", nullptr}, {"min", nullptr},  {"max", nullptr}};
  return json{{"count", s.count}, {"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90},
              {"p99", s.p99},     {"min", s.min},   {"max", s.max}};
}

std::string SummaryRow(const char* name, const LatencySummary& s) {
  if (s.count == 0)
    return absl::StrFormat("%-6s %9d %10s %10s %10s %10s %10s %10s\n", name, 0, "-", "-", "-", "-", "-", "-");
  return absl::StrFormat("%-6s %9d %10.3f %10.3f %10.3f %10.3f %10.3f %10.3f\n", name, s.count, s.mean, s.p50, s.p90,
                         s.p99, s.min, s.max);
}

// Parses a number option; std::nullopt when absent.
absl::StatusOr<std::optional<double>> GetDouble(const cli::Args& args, const std::string& name, double lo, double hi,
                                                bool lo_inclusive) {
  auto v = args.Get(name);
  if (!v.has_value()) return std::nullopt;
  double d = 0;
  if (!absl::SimpleAtod(*v, &d) || !std::isfinite(d) || d > hi || d < lo || (!lo_inclusive && d == lo)) {
    return absl::InvalidArgumentError(
        absl::StrCat("--", name, " must be a number in ", lo_inclusive ? "[" : "(", lo, ", ", hi, "]"));
  }
  return d;
}

int Usage(const std::string& message) {
  std::fprintf(stderr, "mq-loadgen: %s (see mq-loadgen --help)\n", cli::SanitizeTerminalText(message).c_str());
  return kExitUsage;
}

// vocab_size from the model's config.json in the registry; std::nullopt when it cannot be read.
std::optional<int64_t> ModelVocabSize(const std::shared_ptr<grpc::Channel>& channel, const std::string& token,
                                      const std::string& model, std::string* why) {
  auto registry = RegistryService::NewStub(channel);
  grpc::ClientContext ctx;
  PrepareClientContext(&ctx, token, absl::Seconds(30));
  ReadFileRequest req;
  req.set_kind(ARTIFACT_KIND_MODEL);
  req.set_ref(model);
  req.set_path("config.json");
  auto reader = registry->ReadFile(&ctx, req);
  std::string content;
  FileChunk chunk;
  while (reader->Read(&chunk)) {
    content += chunk.data();
    if (content.size() > (4 << 20)) {
      ctx.TryCancel();
      break;
    }
  }
  grpc::Status status = reader->Finish();
  if (!status.ok()) {
    *why = absl::StrCat(CodeName(status.error_code()), ": ", status.error_message());
    return std::nullopt;
  }
  json config = json::parse(content, nullptr, /*allow_exceptions=*/false);
  if (!config.is_object() || !config.contains("vocab_size") || !config["vocab_size"].is_number_integer()) {
    *why = "config.json has no integer vocab_size";
    return std::nullopt;
  }
  return config["vocab_size"].get<int64_t>();
}

int Main(int argc, char** argv) {
  // "--ignore-eos=false" would parse as "not given"; spell it as the negative flag.
  std::vector<std::string> storage(argv, argv + argc);
  for (std::string& a : storage) {
    if (a == "--ignore-eos=false") a = "--no-ignore-eos";
  }
  std::vector<char*> ptrs;
  for (std::string& a : storage) ptrs.push_back(a.data());
  auto parsed =
      cli::Args::Parse(static_cast<int>(ptrs.size()), ptrs.data(), {"insecure", "ignore-eos", "no-ignore-eos", "help"},
                       {"server", "token", "token-file", "tls-ca", "tls-server-name", "model", "streams", "requests",
                        "duration", "warmup", "timeout", "prompt-tokens", "prompt-id-max", "prompt", "max-new-tokens",
                        "temperature", "seed", "json"});
  if (!parsed.ok()) return Usage(std::string(parsed.status().message()));
  const cli::Args& args = *parsed;
  if (args.Has("help")) {
    std::fputs(kUsage, stdout);
    return kExitOk;
  }
  if (!args.positionals().empty()) return Usage(absl::StrCat("unexpected argument \"", args.positionals()[0], "\""));

  Config cfg;
  auto model = args.Require("model");
  if (!model.ok()) return Usage(std::string(model.status().message()));
  cfg.model = *model;
  cfg.server = args.GetOr("server", "");
  if (cfg.server.empty()) {
    const char* env = std::getenv("MQ_SERVER");
    cfg.server = env != nullptr && *env ? env : "localhost:7070";
  }
  auto streams = args.GetInt("streams", 1, 1, 1024);
  auto requests = args.GetInt("requests", 0, 1, 10000000);
  auto warmup = args.GetInt("warmup", -1, 0, 100000);
  auto prompt_tokens = args.GetInt("prompt-tokens", 128, 1, 1000000);
  auto id_max = args.GetInt("prompt-id-max", 20000, 101, std::numeric_limits<int32_t>::max());
  auto max_new = args.GetInt("max-new-tokens", 128, 1, 1000000);
  auto seed = args.GetInt("seed", 0, 0, std::numeric_limits<int64_t>::max());
  auto duration = GetDouble(args, "duration", 0, 86400, false);
  auto timeout = GetDouble(args, "timeout", 0, 86400, true);
  auto temperature = GetDouble(args, "temperature", 0, 100, true);
  for (const absl::Status& s :
       {streams.status(), requests.status(), warmup.status(), prompt_tokens.status(), id_max.status(), max_new.status(),
        seed.status(), duration.status(), timeout.status(), temperature.status()}) {
    if (!s.ok()) return Usage(std::string(s.message()));
  }
  if (args.Has("prompt") && (args.Has("prompt-tokens") || args.Has("prompt-id-max"))) {
    return Usage("--prompt and --prompt-tokens/--prompt-id-max exclude each other");
  }
  if (args.Has("ignore-eos") && args.Has("no-ignore-eos")) return Usage("--ignore-eos and --no-ignore-eos conflict");
  cfg.streams = static_cast<int>(*streams);
  if (args.Has("requests")) {
    cfg.requests = *requests;
  } else if (*duration) {
    cfg.requests = std::numeric_limits<int64_t>::max();
  } else {
    cfg.requests = 10 * cfg.streams;
  }
  cfg.duration_s = duration->value_or(0);
  cfg.warmup = *warmup >= 0 ? *warmup : cfg.streams;
  cfg.timeout_s = timeout->value_or(600);
  cfg.text_prompt = args.Has("prompt");
  cfg.prompt = args.GetOr("prompt", "");
  cfg.prompt_tokens = static_cast<int>(*prompt_tokens);
  cfg.prompt_id_hi = static_cast<int32_t>(*id_max);
  cfg.prompt_id_hi_given = args.Has("prompt-id-max");
  cfg.max_new_tokens = static_cast<int>(*max_new);
  cfg.ignore_eos = !args.Has("no-ignore-eos");
  cfg.temperature = static_cast<float>(temperature->value_or(0));
  cfg.seed = static_cast<uint64_t>(*seed);
  cfg.json_path = args.GetOr("json", "");

  ClientTlsOptions tls;
  tls.insecure = args.Has("insecure");
  tls.ca_file = args.GetOr("tls-ca", "");
  tls.server_name_override = args.GetOr("tls-server-name", "");
  std::string token;
  if (!tls.insecure) {
    auto t = ResolveToken(args.GetOr("token", ""), args.GetOr("token-file", ""), "MQ_TOKEN");
    if (!t.ok()) return Usage(std::string(t.status().message()));
    token = *t;
  }
  auto channel = MakeChannel(cfg.server, tls);
  if (!channel.ok()) {
    std::fprintf(stderr, "mq-loadgen: %s\n", cli::SanitizeTerminalText(channel.status().message()).c_str());
    return kExitFailed;
  }

  // Random prompt ids must exist in the model's vocabulary.
  if (!cfg.text_prompt && !cfg.prompt_id_hi_given) {
    std::string why;
    if (auto vocab = ModelVocabSize(*channel, token, cfg.model, &why)) {
      if (*vocab < cfg.prompt_id_hi) {
        cfg.prompt_id_hi = static_cast<int32_t>(std::max<int64_t>(*vocab, 1));
        std::fprintf(stderr, "mq-loadgen: prompt token ids from [%d, %d) (the model's vocab_size)\n",
                     std::min(cfg.prompt_id_lo, cfg.prompt_id_hi - 1), cfg.prompt_id_hi);
      }
    } else {
      std::fprintf(stderr, "mq-loadgen: could not read the model's vocab_size (%s); ids from [%d, %d)\n",
                   cli::SanitizeTerminalText(why, false).c_str(), cfg.prompt_id_lo, cfg.prompt_id_hi);
    }
  }
  cfg.prompt_id_lo = std::min(cfg.prompt_id_lo, cfg.prompt_id_hi - 1);

  LoadGen gen(cfg, *channel, token);
  cli::InterruptWatcher interrupt([&gen] { gen.Stop(); });
  std::thread progress;
  std::atomic<bool> run_done{false};
  if (::isatty(STDERR_FILENO) == 1) {
    progress = std::thread([&] {
      while (!run_done.load()) {
        gen.DrawProgress();
        for (int i = 0; i < 5 && !run_done.load(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  const bool measured = gen.Run();
  run_done.store(true);
  if (progress.joinable()) progress.join();
  if (::isatty(STDERR_FILENO) == 1) std::fprintf(stderr, "\r\033[K");

  // Merge.
  StreamStats all;
  Clock::time_point last_end = gen.start();
  for (const StreamStats& s : gen.stats()) {
    all.ttft.Merge(s.ttft);
    all.itl.Merge(s.itl);
    all.tpot.Merge(s.tpot);
    all.e2e.Merge(s.e2e);
    all.started += s.started;
    all.ok += s.ok;
    all.failed += s.failed;
    all.interrupted += s.interrupted;
    all.output_tokens += s.output_tokens;
    all.prompt_tokens += s.prompt_tokens;
    all.short_outputs += s.short_outputs;
    for (const auto& [k, v] : s.errors) all.errors[k] += v;
    for (const auto& [k, v] : s.finish_reasons) all.finish_reasons[k] += v;
    if (s.last_end.has_value()) last_end = std::max(last_end, *s.last_end);
    if (all.first_error.empty()) all.first_error = s.first_error;
    if (all.served_model.empty()) all.served_model = s.served_model;
  }
  int64_t warm_ok = 0, warm_failed = 0;
  std::map<std::string, int64_t> warm_errors;
  std::string warm_first_error;
  for (const StreamStats& s : gen.warm_stats()) {
    warm_ok += s.ok;
    warm_failed += s.failed;
    for (const auto& [k, v] : s.errors) warm_errors[k] += v;
    if (warm_first_error.empty()) warm_first_error = s.first_error;
    if (all.served_model.empty()) all.served_model = s.served_model;
  }
  if (!measured && !gen.stopped()) {
    std::fprintf(stderr, "mq-loadgen: every warm-up request failed (%lld); first error: %s\n",
                 static_cast<long long>(warm_failed), cli::SanitizeTerminalText(warm_first_error).c_str());
    return kExitFailed;
  }

  const double wall = std::chrono::duration<double>(last_end - gen.start()).count();
  const double tokens_per_s = wall > 0 ? static_cast<double>(all.output_tokens) / wall : 0;
  const double requests_per_s = wall > 0 ? static_cast<double>(all.ok) / wall : 0;
  const LatencySummary ttft = all.ttft.Summarize(), itl = all.itl.Summarize(), tpot = all.tpot.Summarize(),
                       e2e = all.e2e.Summarize();

  // Table.
  FILE* out = cfg.json_path == "-" ? stderr : stdout;
  std::string prompt_desc = cfg.text_prompt ? absl::StrCat("text prompt of ", cfg.prompt.size(), " bytes")
                                            : absl::StrCat("prompt ", cfg.prompt_tokens, " tokens");
  std::fprintf(out, "model %s at %s: %d streams, %s, max_new_tokens %d%s, temperature %g\n",
               cli::SanitizeTerminalText(all.served_model.empty() ? cfg.model : all.served_model, false).c_str(),
               cli::SanitizeTerminalText(cfg.server, false).c_str(), cfg.streams, prompt_desc.c_str(),
               cfg.max_new_tokens, cfg.ignore_eos ? " (ignore_eos)" : "", cfg.temperature);
  std::fprintf(out, "warm-up: %lld requests (%lld failed), excluded\n", static_cast<long long>(warm_ok + warm_failed),
               static_cast<long long>(warm_failed));
  std::fprintf(out, "measured: %lld requests in %.3f s: %lld ok, %lld failed%s\n",
               static_cast<long long>(all.ok + all.failed), wall, static_cast<long long>(all.ok),
               static_cast<long long>(all.failed),
               gen.stopped() ? absl::StrCat(", ", all.interrupted, " cancelled by interrupt").c_str() : "");
  std::fprintf(out, "throughput: %.1f output tokens/s, %.3f requests/s (%lld output tokens, %lld prompt tokens)\n",
               tokens_per_s, requests_per_s, static_cast<long long>(all.output_tokens),
               static_cast<long long>(all.prompt_tokens));
  std::fprintf(out, "\n%-6s %9s %10s %10s %10s %10s %10s %10s\n", "ms", "count", "mean", "p50", "p90", "p99", "min",
               "max");
  std::fputs(SummaryRow("TTFT", ttft).c_str(), out);
  std::fputs(SummaryRow("ITL", itl).c_str(), out);
  std::fputs(SummaryRow("TPOT", tpot).c_str(), out);
  std::fputs(SummaryRow("E2E", e2e).c_str(), out);
  std::string finishes;
  for (const auto& [k, v] : all.finish_reasons) absl::StrAppend(&finishes, finishes.empty() ? "" : ", ", k, " ", v);
  std::fprintf(out, "\nfinish reasons: %s",
               finishes.empty() ? "-" : cli::SanitizeTerminalText(finishes, false).c_str());
  if (all.short_outputs > 0) {
    std::fprintf(out, " (%lld outputs shorter than %d tokens)", static_cast<long long>(all.short_outputs),
                 cfg.max_new_tokens);
  }
  std::fprintf(out, "\n");
  std::string errors;
  for (const auto& [k, v] : all.errors) absl::StrAppend(&errors, errors.empty() ? "" : ", ", k, " ", v);
  std::fprintf(out, "errors: %s\n", errors.empty() ? "none" : errors.c_str());
  if (!all.first_error.empty()) {
    std::fprintf(out, "first error: %s\n", cli::SanitizeTerminalText(all.first_error).c_str());
  }
  std::fflush(out);

  if (!cfg.json_path.empty()) {
    json config = {
        {"server", cfg.server},
        {"model", cfg.model},
        {"streams", cfg.streams},
        {"requests", cfg.requests == std::numeric_limits<int64_t>::max() ? json(nullptr) : json(cfg.requests)},
        {"duration_s", cfg.duration_s > 0 ? json(cfg.duration_s) : json(nullptr)},
        {"warmup", cfg.warmup},
        {"timeout_s", cfg.timeout_s},
        {"prompt", cfg.text_prompt ? json(cfg.prompt) : json(nullptr)},
        {"prompt_tokens", cfg.text_prompt ? json(nullptr) : json(cfg.prompt_tokens)},
        {"prompt_id_range", cfg.text_prompt ? json(nullptr) : json::array({cfg.prompt_id_lo, cfg.prompt_id_hi})},
        {"max_new_tokens", cfg.max_new_tokens},
        {"ignore_eos", cfg.ignore_eos},
        {"temperature", cfg.temperature},
        {"seed", cfg.seed}};
    json result = {{"tool", "mq-loadgen"},
                   {"config", config},
                   {"served_model", all.served_model},
                   {"interrupted", gen.stopped()},
                   {"warmup", {{"requests", warm_ok + warm_failed}, {"failed", warm_failed}, {"errors", warm_errors}}},
                   {"wall_s", wall},
                   {"requests",
                    {{"measured", all.ok + all.failed},
                     {"ok", all.ok},
                     {"failed", all.failed},
                     {"cancelled_by_interrupt", all.interrupted}}},
                   {"output_tokens", all.output_tokens},
                   {"prompt_tokens", all.prompt_tokens},
                   {"output_tokens_per_s", tokens_per_s},
                   {"requests_per_s", requests_per_s},
                   {"ttft_ms", SummaryJson(ttft)},
                   {"itl_ms", SummaryJson(itl)},
                   {"tpot_ms", SummaryJson(tpot)},
                   {"e2e_ms", SummaryJson(e2e)},
                   {"finish_reasons", all.finish_reasons},
                   {"short_outputs", all.short_outputs},
                   {"errors", all.errors},
                   {"first_error", all.first_error.empty() ? json(nullptr) : json(all.first_error)}};
    // Server text may not be valid UTF-8; replace rather than throw.
    const std::string text = result.dump(2, ' ', false, json::error_handler_t::replace) + "\n";
    if (cfg.json_path == "-") {
      std::fwrite(text.data(), 1, text.size(), stdout);
    } else {
      std::ofstream f(cfg.json_path, std::ios::binary | std::ios::trunc);
      f << text;
      f.close();
      if (!f) {
        std::fprintf(stderr, "mq-loadgen: cannot write %s\n", cfg.json_path.c_str());
        return kExitFailed;
      }
    }
  }
  if (gen.stopped()) return cli::kExitInterrupted;
  return all.failed > 0 ? kExitFailed : kExitOk;
}

}  // namespace
}  // namespace mq::bench

int main(int argc, char** argv) { return mq::bench::Main(argc, argv); }
