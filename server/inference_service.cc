#include "inference_service.h"

#include <chrono>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>

#include "finished_reactor.h"
#include "inference_router.h"
#include "log.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

namespace {

using Clock = std::chrono::steady_clock;

// The end of one inference call in the log: a warning when it failed, a debug line otherwise,
// with its request id (the router's call id), the model asked for and the outcome.
void LogCallEnd(const char* call, const std::string& request, const std::string& model, const absl::Status& status,
                Clock::time_point start) {
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (status.ok()) {
    Log(LogLevel::kDebug, "inference call finished").Kv("call", call).Kv("request", request).Kv("model", model).Kv("seconds", seconds);
  } else {
    Log(LogLevel::kWarning, "inference call failed").Kv("call", call).Kv("request", request).Kv("model", model)
        .Kv("code", absl::StatusCodeToString(status.code())).Kv("error", std::string(status.message())).Kv("seconds", seconds);
  }
}
double Seconds(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// A call the client ended (OnCancel): at its deadline it timed out, else the client cancelled or
// went away. The status it finishes with is also the one the RPC metrics record. A client whose
// own deadline fires cancels the stream, and that cancellation can reach the server a little
// before the server's copy of the deadline (it started counting when the request arrived): a
// cancellation within kDeadlineSlack of the deadline counts as the deadline.
constexpr std::chrono::milliseconds kDeadlineSlack{1000};
grpc::Status EndedByClient(std::chrono::system_clock::time_point deadline,
                           const char* cancelled = "cancelled by the client") {
  if (std::chrono::system_clock::now() + kDeadlineSlack >= deadline)
    return grpc::Status(grpc::StatusCode::DEADLINE_EXCEEDED, "deadline exceeded");
  return grpc::Status(grpc::StatusCode::CANCELLED, cancelled);
}

// A status's code as the metrics name it ("CANCELLED", "DEADLINE_EXCEEDED", …).
std::string CodeName(const grpc::Status& s) {
  return absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code()));
}

// The router holds a call's observer (shared) longer than gRPC keeps the call's reactor: the
// Relay forwards the router's events to the reactor until the reactor, in its OnDone, detaches it.
// Reactor: Push(const InferenceEvent&) and Complete(const absl::Status&).
template <typename Reactor>
class Relay final : public InferenceCallObserver {
 public:
  explicit Relay(Reactor* r) : reactor_(r) {}
  void OnEvent(const InferenceEvent& event) override {
    std::lock_guard<std::mutex> l(mu_);
    if (reactor_ != nullptr) reactor_->Push(event);
  }
  void OnDone(const absl::Status& status) override {
    std::lock_guard<std::mutex> l(mu_);
    if (reactor_ != nullptr) reactor_->Complete(status);
  }
  void Detach() {
    std::lock_guard<std::mutex> l(mu_);
    reactor_ = nullptr;
  }

 private:
  std::mutex mu_;  // guards reactor_: the reactor may be deleted while the router still calls
  Reactor* reactor_;
};

// Streams one Generate call: the router's events become writes, one in flight at a time.
class GenerateReactor final : public grpc::ServerWriteReactor<GenerateResponse> {
 public:
  GenerateReactor(ServiceDeps deps, const GenerateRequest& req, std::chrono::system_clock::time_point deadline)
      : deps_(deps), requested_model_(req.model()), deadline_(deadline) {
    relay_ = std::make_shared<Relay<GenerateReactor>>(this);
    InferenceCall call;
    call.set_model(req.model());
    *call.mutable_generate() = req;
    auto id = deps_.router->Start(std::move(call), relay_);
    std::lock_guard<std::mutex> l(mu_);
    if (!id.ok()) {
      if (!finished_) {
        final_ = ToGrpcStatus(id.status());
        done_ = true;
        RecordEnd(absl::StatusCodeToString(id.status().code()));
        MaybeFinish();
      }
      return;
    }
    call_id_ = *id;
    if (ended_early_) LogCallEnd("generate", call_id_, requested_model_, *ended_early_, start_);
    if (cancelled_) deps_.router->Cancel(call_id_);  // the client left before Start returned
  }

  void Push(const InferenceEvent& event) {
    std::lock_guard<std::mutex> l(mu_);
    if (done_ || !event.has_generate()) return;
    const GenerateResponse& g = event.generate();
    const auto now = Clock::now();
    if (model_.empty() && !g.model().empty()) model_ = g.model();
    if (deps_.metrics != nullptr && !g.token_ids().empty()) {
      auto last = last_token_.find(g.index());
      if (last == last_token_.end()) {
        // Once per call: its completions share the prefill, hence the first token and the wait.
        if (!first_token_seen_) {
          deps_.metrics->ObserveTimeToFirstToken(model_, Seconds(start_, now));
          deps_.metrics->ObserveQueueTime(model_, event.queue_seconds());
        }
        first_token_seen_ = true;
      } else {
        deps_.metrics->ObserveInterTokenLatency(model_, Seconds(last->second, now));
      }
      last_token_[g.index()] = now;
      deps_.metrics->AddGenerationTokens(model_, g.token_ids_size());
      // The call's outcome is its first completion's finish reason, counted once at its end
      // (RecordEnd), however many completions it has.
      if (!g.finish_reason().empty() && g.index() == 0) {
        outcome_ = g.finish_reason();
        deps_.metrics->AddPromptTokens(model_, g.prompt_tokens());
      }
    }
    queue_.push_back(g);
    if (!writing_) {
      writing_ = true;
      StartWrite(&queue_.front());
    }
  }

  void Complete(const absl::Status& status) {
    std::lock_guard<std::mutex> l(mu_);
    if (done_) return;
    done_ = true;
    final_ = ToGrpcStatus(status);
    // The call may end before Start has returned its id: then the constructor logs it.
    if (call_id_.empty()) ended_early_ = status;
    else LogCallEnd("generate", call_id_, requested_model_, status, start_);
    RecordEnd(status.ok() ? "" : absl::StatusCodeToString(status.code()));
    MaybeFinish();
  }

  void OnWriteDone(bool ok) override {
    std::string cancel;
    {
      std::lock_guard<std::mutex> l(mu_);
      queue_.pop_front();
      writing_ = false;
      if (!ok) {
        // The client is gone: stop the worker's sequence now rather than at the next failed write.
        cancel = call_id_;
        const grpc::Status ended = EndedByClient(deadline_, "the client went away");  // the write failed: gone, or timed out
        if (!done_) RecordEnd(CodeName(ended));
        done_ = true;
        final_ = ended;
        DropUnsent();
      } else if (!queue_.empty()) {
        writing_ = true;
        StartWrite(&queue_.front());
      }
      MaybeFinish();
    }
    if (!cancel.empty()) deps_.router->Cancel(cancel);
  }

  // Client cancellation, deadline or disconnect.
  void OnCancel() override {
    std::string cancel;
    {
      std::lock_guard<std::mutex> l(mu_);
      cancelled_ = true;
      cancel = call_id_;
      if (!done_) {
        done_ = true;
        final_ = EndedByClient(deadline_);
        RecordEnd(CodeName(final_));
        DropUnsent();
      }
      MaybeFinish();
    }
    if (!cancel.empty()) deps_.router->Cancel(cancel);
  }

  void OnDone() override {
    relay_->Detach();
    delete this;
  }

 private:
  // Once per call, whichever way it ends: its latency and its outcome, the status code when it
  // failed, else its first completion's finish reason. The model is "" when the call ended
  // before a worker named it (refused by the router, cancelled before the first token).
  void RecordEnd(const std::string& failure_code) {
    if (deps_.metrics == nullptr || end_recorded_) return;
    end_recorded_ = true;
    deps_.metrics->ObserveRequestLatency(model_, Seconds(start_, Clock::now()));
    deps_.metrics->RequestFinished(model_, !failure_code.empty() ? failure_code : outcome_.empty() ? "OK" : outcome_);
  }

  // Drops queued messages, keeping the one a write in flight still reads.
  void DropUnsent() { queue_.erase(queue_.begin() + (writing_ ? 1 : 0), queue_.end()); }

  void MaybeFinish() {
    if (!done_ || writing_ || finished_) return;
    finished_ = true;
    Finish(final_);
  }

  ServiceDeps deps_;
  const std::string requested_model_;
  const std::chrono::system_clock::time_point deadline_;
  std::optional<absl::Status> ended_early_;  // the call ended before Start returned its id
  std::shared_ptr<Relay<GenerateReactor>> relay_;
  const Clock::time_point start_ = Clock::now();
  std::mutex mu_;  // guards everything below
  std::string call_id_;
  std::string model_;
  std::string outcome_;  // completion 0's finish reason
  std::deque<GenerateResponse> queue_;
  std::map<int32_t, Clock::time_point> last_token_;
  bool first_token_seen_ = false;
  bool writing_ = false;
  bool done_ = false;       // no more messages will be queued
  bool finished_ = false;   // Finish was called
  bool cancelled_ = false;
  bool end_recorded_ = false;  // RecordEnd ran
  grpc::Status final_;
};

// The unary calls (Score, Classify) differ only in their messages, the InferenceCall/Event field
// that carries them, and their names: one reactor serves both through a traits type.
struct ScoreCall {
  using Request = ScoreRequest;
  using Response = ScoreResponse;
  static constexpr char kName[] = "score";
  static constexpr char kOutcome[] = "scored";
  static void Put(const Request& req, InferenceCall* call) { *call->mutable_score() = req; }
  static bool Has(const InferenceEvent& e) { return e.has_score(); }
  static const Response& Get(const InferenceEvent& e) { return e.score(); }
};
// Classify: the worker's queue is per model; a call waiting in it is dropped when the client cancels.
struct ClassifyCall {
  using Request = ClassifyRequest;
  using Response = ClassifyResponse;
  static constexpr char kName[] = "classify";
  static constexpr char kOutcome[] = "classified";
  static void Put(const Request& req, InferenceCall* call) { *call->mutable_classify() = req; }
  static bool Has(const InferenceEvent& e) { return e.has_classify(); }
  static const Response& Get(const InferenceEvent& e) { return e.classify(); }
};

// One answer, then the unary call finishes.
template <typename Kind>
class UnaryCallReactor final : public grpc::ServerUnaryReactor {
 public:
  UnaryCallReactor(ServiceDeps deps, const typename Kind::Request& req, typename Kind::Response* resp,
                   std::chrono::system_clock::time_point deadline)
      : deps_(deps), requested_model_(req.model()), deadline_(deadline), resp_(resp) {
    relay_ = std::make_shared<Relay<UnaryCallReactor>>(this);
    InferenceCall call;
    call.set_model(req.model());
    Kind::Put(req, &call);
    auto id = deps_.router->Start(std::move(call), relay_);
    std::lock_guard<std::mutex> l(mu_);
    if (!id.ok()) {
      FinishOnce(ToGrpcStatus(id.status()));
      return;
    }
    call_id_ = *id;
    if (ended_early_) LogCallEnd(Kind::kName, call_id_, requested_model_, *ended_early_, start_);
    if (cancelled_) deps_.router->Cancel(call_id_);
  }
  void Push(const InferenceEvent& event) {
    std::lock_guard<std::mutex> l(mu_);
    if (!finished_ && Kind::Has(event)) *resp_ = Kind::Get(event);
  }
  void Complete(const absl::Status& status) {
    std::lock_guard<std::mutex> l(mu_);
    if (!finished_ && call_id_.empty()) ended_early_ = status;  // the constructor logs it with the id
    else if (!finished_) LogCallEnd(Kind::kName, call_id_, requested_model_, status, start_);
    FinishOnce(ToGrpcStatus(status));
  }
  // Client cancellation or deadline: the worker drops the call too.
  void OnCancel() override {
    std::string cancel;
    {
      std::lock_guard<std::mutex> l(mu_);
      cancelled_ = true;
      cancel = call_id_;
      FinishOnce(EndedByClient(deadline_));
    }
    if (!cancel.empty()) deps_.router->Cancel(cancel);
  }
  void OnDone() override {
    relay_->Detach();
    delete this;
  }

 private:
  // Every way a call ends comes here once (refused by the router, answered, failed, cancelled or
  // timed out): its latency and outcome are recorded with it. The model is the one that answered,
  // else "" (refused, or ended before a worker named it).
  void FinishOnce(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    if (deps_.metrics != nullptr) {
      deps_.metrics->ObserveRequestLatency(resp_->model(), Seconds(start_, Clock::now()));
      deps_.metrics->RequestFinished(resp_->model(), s.ok() ? Kind::kOutcome : CodeName(s));
    }
    Finish(s);
  }
  ServiceDeps deps_;
  const std::string requested_model_;
  const std::chrono::system_clock::time_point deadline_;
  std::optional<absl::Status> ended_early_;  // the call ended before Start returned its id
  typename Kind::Response* resp_;
  std::shared_ptr<Relay<UnaryCallReactor>> relay_;
  const Clock::time_point start_ = Clock::now();
  std::mutex mu_;  // guards the fields below and *resp_
  std::string call_id_;
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace

grpc::ServerWriteReactor<GenerateResponse>* InferenceServiceImpl::Generate(grpc::CallbackServerContext* ctx,
                                                                          const GenerateRequest* req) {
  absl::Status s;
  return new GenerateReactor(deps_, *req, ctx->deadline());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Score(grpc::CallbackServerContext* ctx, const ScoreRequest* req,
                                                      ScoreResponse* resp) {
  absl::Status s;
  return new UnaryCallReactor<ScoreCall>(deps_, *req, resp, ctx->deadline());
}

grpc::ServerUnaryReactor* InferenceServiceImpl::Classify(grpc::CallbackServerContext* ctx, const ClassifyRequest* req,
                                                         ClassifyResponse* resp) {
  return new UnaryCallReactor<ClassifyCall>(deps_, *req, resp, ctx->deadline());
}

}  // namespace mq::server
