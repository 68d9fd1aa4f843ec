#include "inference_stream.h"

#include <chrono>
#include <cstring>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference_request.h"
#include "log.h"

namespace mq::worker {

using namespace mambaquant::v1;  // NOLINT

namespace {

void FillLogprobs(const std::vector<serve::TokenChoice>& in, google::protobuf::RepeatedPtrField<TokenLogprob>* out) {
  for (const auto& c : in) {
    TokenLogprob* t = out->Add();
    t->set_token_id(c.token);
    t->set_logprob(c.logprob);
    for (const auto& a : c.top) {
      TopLogprob* x = t->add_top();
      x->set_token_id(a.token);
      x->set_logprob(a.logprob);
    }
  }
}

}  // namespace

InferenceStream::InferenceStream(const ServerConnection* server, ModelHost* host, WorkerCapacity capacity,
                                 std::function<std::string()> worker_id, std::vector<std::string> preload,
                                 std::function<void(const std::string&)> on_fatal)
    : server_(server), host_(host), capacity_(std::move(capacity)), worker_id_(std::move(worker_id)),
      preload_(std::move(preload)), on_fatal_(std::move(on_fatal)) {
  host_->SetChangeListener([this] {
    std::lock_guard<std::mutex> l(mu_);
    load_changed_ = true;
    cv_.notify_all();
  });
}

InferenceStream::~InferenceStream() {
  Stop();
  host_->SetChangeListener(nullptr);
}

void InferenceStream::Start() { thread_ = std::thread([this] { Run(); }); }

void InferenceStream::Stop() {
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    if (ctx_ != nullptr) ctx_->TryCancel();
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
  CancelAll();
  // The engines call this stream's sinks from their loops: they must be gone before it is.
  host_->Shutdown();
}

size_t InferenceStream::Drain(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> l(mu_);
  draining_ = true;
  load_changed_ = true;  // the writer reports it now
  cv_.notify_all();
  // Done when no call runs and their last events have left (the final token of a generation is
  // queued just before its call ends): the stream closes right after.
  cv_.wait_until(l, deadline, [&] { return (calls_.empty() && outbox_.empty() && !writing_batch_) || !open_ || stopping_; });
  const size_t left = calls_.size();
  if (left == 0 && open_ && !stopping_) {
    closing_ = true;
    cv_.notify_all();
    cv_.wait_until(l, deadline, [&] { return !open_ || stopping_; });
  }
  return left;
}

WorkerLoad InferenceStream::CurrentLoad() {
  WorkerLoad load = host_->Snapshot();
  std::lock_guard<std::mutex> l(mu_);
  load.set_draining(draining_);
  return load;
}

bool InferenceStream::connected() const {
  std::lock_guard<std::mutex> l(mu_);
  return open_;
}

void InferenceStream::Run() {
  int backoff_ms = 200;
  for (;;) {
    {
      std::lock_guard<std::mutex> l(mu_);
      if (stopping_ || closing_) return;  // closing_: drained; the process is about to leave
    }
    const std::string id = worker_id_();
    if (!id.empty()) {
      const auto t0 = std::chrono::steady_clock::now();
      Serve(id);
      // A stream that lived a while was healthy: reconnect quickly.
      if (std::chrono::steady_clock::now() - t0 > std::chrono::seconds(10)) backoff_ms = 200;
    }
    std::unique_lock<std::mutex> l(mu_);
    cv_.wait_for(l, std::chrono::milliseconds(backoff_ms), [&] { return stopping_; });
    backoff_ms = std::min(backoff_ms * 2, 5000);
  }
}

void InferenceStream::Serve(const std::string& worker_id) {
  grpc::ClientContext ctx;
  server_->Prepare(&ctx);
  {
    std::lock_guard<std::mutex> l(mu_);
    if (stopping_) return;
    ctx_ = &ctx;
  }
  std::unique_ptr<Stream> stream = server_->stub->Serve(&ctx);
  ServeUp hello;
  hello.mutable_hello()->set_worker_id(worker_id);
  *hello.mutable_hello()->mutable_capacity() = capacity_;
  *hello.mutable_hello()->mutable_load() = CurrentLoad();
  for (const auto& m : preload_) hello.mutable_hello()->add_preload(m);
  if (stream->Write(hello)) {
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = true;
      outbox_.clear();
      writing_batch_ = false;
    }
    Log(LogLevel::kInfo, "inference stream open").Kv("worker", worker_id);
    std::thread writer([&] { WriterLoop(stream.get(), &ctx, worker_id); });
    ServeDown down;
    while (stream->Read(&down)) Dispatch(down);
    {
      std::lock_guard<std::mutex> l(mu_);
      open_ = false;
      cv_.notify_all();
    }
    writer.join();
  }
  grpc::Status st = stream->Finish();
  {
    std::lock_guard<std::mutex> l(mu_);
    open_ = false;
    ctx_ = nullptr;
  }
  // The server failed every call of this stream when it broke: drop them here too.
  CancelAll();
  bool stopping;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping = stopping_ || closing_;
  }
  if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION && !preload_.empty() && on_fatal_) {
    on_fatal_(st.error_message());  // an unknown --preload model: retrying cannot help
    return;
  }
  if (!stopping) Log(LogLevel::kWarning, "inference stream closed; reconnecting").Kv("code", static_cast<int>(st.error_code())).Kv("error", st.error_message());
}

void InferenceStream::WriterLoop(Stream* stream, grpc::ClientContext* ctx, const std::string& worker_id) {
  auto next_report = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  for (;;) {
    std::deque<ServeUp> batch;
    bool report = false;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait_until(l, next_report, [&] { return !open_ || stopping_ || closing_ || !outbox_.empty() || load_changed_; });
      if (!open_ || stopping_) break;
      if (closing_ && outbox_.empty()) break;  // everything queued is written: half-close
      batch.swap(outbox_);
      writing_batch_ = !batch.empty();
      if (load_changed_ || std::chrono::steady_clock::now() >= next_report) {
        report = true;
        load_changed_ = false;
      }
    }
    // Consecutive events go out as one message (a decode step of B sequences is one write, not
    // B), bounded so a message stays far below the 8 MiB limit.
    while (!batch.empty()) {
      ServeUp up;
      if (batch.front().has_event()) {
        size_t bytes = 0;
        while (!batch.empty() && batch.front().has_event() && bytes < (1u << 20)) {
          bytes += batch.front().event().ByteSizeLong();
          *up.mutable_events()->add_events() = std::move(*batch.front().mutable_event());
          batch.pop_front();
        }
      } else {
        up = std::move(batch.front());
        batch.pop_front();
      }
      if (!stream->Write(up)) {
        ctx->TryCancel();
        return;
      }
    }
    {
      std::lock_guard<std::mutex> l(mu_);
      writing_batch_ = false;
      cv_.notify_all();  // Drain waits for the last events to be written
    }
    if (report) {
      ServeUp up;
      *up.mutable_load() = CurrentLoad();
      if (!stream->Write(up)) {
        ctx->TryCancel();
        return;
      }
      next_report = std::chrono::steady_clock::now() + std::chrono::seconds(2);
      // A worker that registered again under a new id reopens its stream under that id.
      if (worker_id_() != worker_id) {
        ctx->TryCancel();
        return;
      }
    }
  }
  stream->WritesDone();
}

void InferenceStream::Send(ServeUp up) {
  std::lock_guard<std::mutex> l(mu_);
  if (!open_) return;
  outbox_.push_back(std::move(up));
  cv_.notify_all();
}

void InferenceStream::SendError(const std::string& call_id, const absl::Status& status) {
  ServeUp up;
  InferenceEvent* e = up.mutable_event();
  e->set_call_id(call_id);
  e->mutable_error()->set_code(static_cast<int>(status.code() == absl::StatusCode::kOk ? absl::StatusCode::kInternal : status.code()));
  e->mutable_error()->set_message(std::string(status.message()));
  e->set_last(true);
  Send(std::move(up));
}

void InferenceStream::EndCall(const std::string& call_id) {
  std::lock_guard<std::mutex> l(mu_);
  calls_.erase(call_id);
  if (calls_.empty()) cv_.notify_all();  // Drain waits for this
}

void InferenceStream::Dispatch(const ServeDown& down) {
  switch (down.msg_case()) {
    case ServeDown::kCall:
      StartCall(down.call());
      break;
    case ServeDown::kCancel:
      CancelCall(down.cancel().call_id());
      break;
    case ServeDown::kModel:
      RunModelCommand(down.model());
      break;
    default:
      break;
  }
}

void InferenceStream::StartCall(const InferenceCall& call) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (calls_.count(call.call_id()) != 0) return;  // a repeat of a call in flight
    calls_[call.call_id()].model = call.model();
  }
  host_->Acquire(call.model(), call.model_files(), [this, call](absl::StatusOr<HostedModel> hosted) {
    if (hosted.ok() && call.has_classify() && hosted->classifier == nullptr)
      hosted = absl::InvalidArgumentError(absl::StrCat("model ", call.model(), " is a text model: it cannot classify images"));
    if (hosted.ok() && !call.has_classify() && hosted->engine == nullptr)
      hosted = absl::InvalidArgumentError(absl::StrCat("model ", call.model(), " is an image classifier (Vision Mamba): use Classify"));
    if (!hosted.ok()) {
      SendError(call.call_id(), hosted.status());
      EndCall(call.call_id());
      return;
    }
    if (call.has_classify()) SubmitClassify(call, hosted->classifier);
    else Submit(call, std::move(hosted->engine));
  });
}

void InferenceStream::Submit(const InferenceCall& call, std::shared_ptr<serve::ServingEngine> engine) {
  const std::string id = call.call_id();
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = calls_.find(id);
    cancelled = it == calls_.end() || it->second.cancelled;
    if (!cancelled) it->second.engine = engine;
  }
  if (cancelled) {
    SendError(id, absl::CancelledError("the call was cancelled"));
    EndCall(id);
    return;
  }
  Status st;
  if (call.has_score()) {
    const ScoreRequest& r = call.score();
    serve::ScoreInput in;
    in.has_text = r.input_case() == ScoreRequest::kText;
    in.text = r.text();
    in.ids.assign(r.tokens().ids().begin(), r.tokens().ids().end());
    in.top_logprobs = r.top_logprobs();
    st = engine->SubmitScore(id, std::move(in), [this, id, model = call.model()](StatusOr<serve::ScoreResult>&& res) {
      if (!res.ok()) {
        SendError(id, ToAbslStatus(res.status()));
      } else {
        ServeUp up;
        InferenceEvent* e = up.mutable_event();
        e->set_call_id(id);
        e->set_last(true);
        ScoreResponse* s = e->mutable_score();
        s->mutable_token_ids()->Assign(res->token_ids.begin(), res->token_ids.end());
        FillLogprobs(res->logprobs, s->mutable_logprobs());
        s->set_perplexity(res->perplexity);
        s->set_mean_nll(res->mean_nll);
        s->set_model(model);
        Send(std::move(up));
      }
      EndCall(id);
    });
  } else {
    const GenerateRequest& r = call.generate();
    auto params = GenerationParamsFromProto(r);
    if (!params.ok()) {
      SendError(id, params.status());
      EndCall(id);
      return;
    }
    serve::GenerationInput in;
    in.has_text = r.input_case() == GenerateRequest::kPrompt;
    in.prompt_text = r.prompt();
    in.prompt_ids.assign(r.prompt_tokens().ids().begin(), r.prompt_tokens().ids().end());
    in.params = std::move(params->params);
    in.seed_given = params->seed_given;
    in.return_prompt_logits = call.return_prompt_logits();
    auto on_event = [this, id, model = call.model()](serve::GenerationEvent&& ev) {
      ServeUp up;
      InferenceEvent* e = up.mutable_event();
      e->set_call_id(id);
      GenerateResponse* g = e->mutable_generate();
      g->mutable_token_ids()->Assign(ev.token_ids.begin(), ev.token_ids.end());
      g->set_text(std::move(ev.text));
      g->set_index(ev.index);
      FillLogprobs(ev.logprobs, g->mutable_logprobs());
      if (ev.first) {
        g->set_seed(ev.seed);
        g->set_model(model);
        e->set_queue_seconds(ev.queue_seconds);
      }
      if (!ev.finish_reason.empty()) {
        g->set_finish_reason(ev.finish_reason);
        g->set_prompt_tokens(ev.prompt_tokens);
        g->set_completion_tokens(ev.completion_tokens);
        g->set_stop_string(ev.stop_string);
      }
      if (!ev.prompt_logits.empty())
        e->set_prompt_logits(reinterpret_cast<const char*>(ev.prompt_logits.data()), ev.prompt_logits.size() * sizeof(float));
      e->set_last(ev.call_done);
      bool open;
      {
        std::lock_guard<std::mutex> l(mu_);
        open = open_ && calls_.count(id) != 0;
      }
      Send(std::move(up));
      if (ev.call_done) EndCall(id);
      return open;  // false: nobody is listening any more, drop the call
    };
    auto on_error = [this, id](const Status& s) {
      SendError(id, ToAbslStatus(s));
      EndCall(id);
    };
    st = engine->SubmitGenerate(id, std::move(in), std::move(on_event), std::move(on_error));
  }
  if (!st.ok()) {
    SendError(id, ToAbslStatus(st));
    EndCall(id);
  }
}

void InferenceStream::SubmitClassify(const InferenceCall& call, const std::shared_ptr<ClassifierRunner>& classifier) {
  const std::string id = call.call_id();
  bool cancelled = false;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = calls_.find(id);
    cancelled = it == calls_.end() || it->second.cancelled;
    if (!cancelled) it->second.classifier = classifier;
  }
  if (cancelled) {
    SendError(id, absl::CancelledError("the call was cancelled"));
    EndCall(id);
    return;
  }
  // The callback holds no reference to the runner: the runner is only ever destroyed by the host.
  absl::Status st = classifier->Submit(id, call.classify(), call.model(), [this, id](absl::StatusOr<ClassifyResponse> res) {
    if (!res.ok()) {
      SendError(id, res.status());
    } else {
      ServeUp up;
      InferenceEvent* e = up.mutable_event();
      e->set_call_id(id);
      e->set_last(true);
      *e->mutable_classify() = std::move(*res);
      Send(std::move(up));
    }
    EndCall(id);
  });
  if (!st.ok()) {
    SendError(id, st);
    EndCall(id);
  }
}

void InferenceStream::RunModelCommand(const ModelCommand& cmd) {
  const std::string id = cmd.call_id();
  auto reply = [this, id, model = cmd.model()](const absl::Status& s, bool loaded, uint64_t bytes) {
    if (!s.ok()) {
      SendError(id, s);
      return;
    }
    ServeUp up;
    InferenceEvent* e = up.mutable_event();
    e->set_call_id(id);
    e->set_last(true);
    e->mutable_model()->set_model(model);
    e->mutable_model()->set_loaded(loaded);
    e->mutable_model()->set_bytes(bytes);
    Send(std::move(up));
  };
  if (cmd.unload()) {
    reply(host_->Unload(cmd.model()), false, 0);
    return;
  }
  const bool required = cmd.required();
  host_->Acquire(cmd.model(), cmd.model_files(), [this, reply, required, model = cmd.model()](
                                                     absl::StatusOr<HostedModel> hosted) {
    if (!hosted.ok()) {
      reply(hosted.status(), false, 0);
      if (required && on_fatal_) on_fatal_(absl::StrCat("--preload ", model, ": ", hosted.status().ToString()));
    } else {
      if (required) Log(LogLevel::kInfo, "preloaded").Kv("model", model).Kv("bytes", hosted->bytes);
      reply(absl::OkStatus(), true, hosted->bytes);
    }
  });
}

void InferenceStream::CancelCall(const std::string& call_id) {
  std::shared_ptr<serve::ServingEngine> engine;
  std::shared_ptr<ClassifierRunner> classifier;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = calls_.find(call_id);
    if (it == calls_.end()) return;
    it->second.cancelled = true;
    engine = it->second.engine.lock();
    classifier = it->second.classifier.lock();
  }
  // A call still waiting for its model ends when the model is ready (Submit sees the flag).
  if (engine != nullptr) engine->Cancel(call_id);
  if (classifier != nullptr) classifier->Cancel(call_id);
}

void InferenceStream::CancelAll() {
  std::vector<std::string> ids;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (const auto& [id, c] : calls_) ids.push_back(id);
  }
  for (const auto& id : ids) CancelCall(id);
}

}  // namespace mq::worker
