#include "inference_router.h"

#include <algorithm>
#include <set>
#include <utility>

#include "absl/strings/str_cat.h"
#include "classify_request.h"
#include "inference_request.h"
#include "log.h"
#include "registry.h"
#include "server_metrics.h"
#include "vim_artifact_check.h"
#include "worker_store.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

struct InferenceRouter::Worker {
  std::string id;
  WorkerStreamSink* sink = nullptr;
  WorkerCapacity capacity;
  std::set<std::string> loaded;   // models it reported loaded
  std::set<std::string> loading;  // models it reported loading, or that we asked it to load
  int64_t inflight = 0;           // sequences of calls routed to it and not over (load reports lag)
  std::set<std::string> calls;
  WorkerLoad last_load;           // its latest report (metrics); last_load.draining(): shutting
                                  // down, finishing its calls, not picked for new ones
};

struct InferenceRouter::Call {
  std::string id;
  std::string worker_id;
  std::string model;
  int32_t sequences = 1;
  std::shared_ptr<InferenceCallObserver> observer;  // inference calls
  std::function<void(absl::Status)> done;           // model commands
  bool cancel_sent = false;
};

namespace {

// Sequences a call occupies on its worker.
int32_t Sequences(const InferenceCall& call) {
  if (call.has_generate()) return std::max(1, call.generate().n());
  return 1;
}

std::string Resolved(const Artifact& a) { return absl::StrCat(a.name(), ":", a.version()); }

// Image models classify, text models generate and score: the registry knows which a model is.
absl::Status CheckCallFitsModel(const InferenceCall& call, const Artifact& model) {
  const bool vim = model.model_type() == kVimModelType;
  if (call.has_classify() && !vim)
    return absl::InvalidArgumentError(absl::StrCat("model ", Resolved(model), " is a text model (model_type \"",
                                                   model.model_type(), "\"): it cannot classify images"));
  if (!call.has_classify() && vim)
    return absl::InvalidArgumentError(absl::StrCat("model ", Resolved(model),
                                                   " is an image classifier (Vision Mamba): use Classify"));
  return absl::OkStatus();
}

}  // namespace

InferenceRouter::InferenceRouter(Registry* registry, WorkerStore* workers, ServerMetrics* metrics)
    : registry_(registry), workers_(workers), metrics_(metrics) {}

InferenceRouter::~InferenceRouter() = default;

absl::StatusOr<InferenceRouter::Worker*> InferenceRouter::PickWorker(const std::string& model, int32_t sequences) {
  Worker* best = nullptr;
  // Rank: has it loaded, then is loading it, then fewest loaded models; ties: least in flight.
  auto rank = [&](const Worker& w) {
    const int tier = w.loaded.count(model) ? 0 : (w.loading.count(model) ? 1 : 2);
    return std::make_tuple(tier, tier == 2 ? static_cast<int64_t>(w.loaded.size()) : 0, w.inflight);
  };
  int draining = 0;
  for (auto& [id, w] : worker_) {
    if (w->sink == nullptr) continue;
    if (w->last_load.draining()) {
      ++draining;
      continue;
    }
    if (sequences > w->capacity.max_sequences()) continue;
    if (best == nullptr || rank(*w) < rank(*best)) best = w.get();
  }
  if (best == nullptr) {
    if (worker_.empty()) return absl::UnavailableError("no inference worker is connected; start an mq-worker");
    if (draining == static_cast<int>(worker_.size()))
      return absl::UnavailableError("every inference worker is shutting down (draining); retry when a new one is up");
    return absl::UnavailableError(absl::StrCat("no connected worker can hold ", sequences, " sequences at once"));
  }
  return best;
}

absl::StatusOr<std::string> InferenceRouter::Start(InferenceCall call, std::shared_ptr<InferenceCallObserver> observer) {
  // The request itself first: a bad request is INVALID_ARGUMENT whether or not a worker is up.
  if (call.has_generate()) {
    absl::Status s = CheckGeneratePrompt(call.generate());
    if (!s.ok()) return s;
    auto params = GenerationParamsFromProto(call.generate());
    if (!params.ok()) return params.status();
  } else if (call.has_score()) {
    absl::Status s = CheckScoreRequest(call.score());
    if (!s.ok()) return s;
  } else if (call.has_classify()) {
    absl::Status s = CheckClassifyRequest(call.classify());
    if (!s.ok()) return s;
  } else {
    return absl::InvalidArgumentError("an inference call needs a generate, score or classify request");
  }
  auto artifact = registry_->Get(ARTIFACT_KIND_MODEL, call.model());
  if (!artifact.ok()) return artifact.status();
  if (absl::Status s = CheckCallFitsModel(call, *artifact); !s.ok()) return s;
  call.set_model(Resolved(*artifact));
  *call.mutable_model_files() = artifact->files();

  std::string call_id;
  WorkerStreamSink* sink = nullptr;
  ServeDown down;
  {
    absl::MutexLock l(&mu_);
    if (draining_) return absl::UnavailableError("the server is shutting down; retry");
    const int32_t sequences = Sequences(call);
    auto picked = PickWorker(call.model(), sequences);
    if (!picked.ok()) return picked.status();
    Worker* w = *picked;
    // The worker's advertised limits, checked before anything is sent.
    const WorkerCapacity& cap = w->capacity;
    // Texts too long for the limit are refused here too: they would not fit the worker anyway,
    // and a message near the transport's size limit must not reach the worker's stream.
    const int64_t bytes_per_token = serve::GenerationLimits::kMaxTextBytesPerToken;
    if (call.has_generate()) {
      const GenerateRequest& g = call.generate();
      if (g.input_case() == GenerateRequest::kPrompt &&
          static_cast<int64_t>(g.prompt().size()) > int64_t{cap.max_prompt_tokens()} * bytes_per_token)
        return absl::InvalidArgumentError(absl::StrCat("the prompt is ", g.prompt().size(), " bytes, over the limit of ",
                                                       cap.max_prompt_tokens(), " prompt tokens"));
      if (g.input_case() == GenerateRequest::kPromptTokens && g.prompt_tokens().ids_size() > cap.max_prompt_tokens())
        return absl::InvalidArgumentError(absl::StrCat("the prompt has ", g.prompt_tokens().ids_size(),
                                                       " tokens, over the limit of ", cap.max_prompt_tokens(), " prompt tokens"));
      if (g.max_new_tokens() > cap.max_new_tokens())
        return absl::InvalidArgumentError(absl::StrCat("max_new_tokens ", g.max_new_tokens(), " is over the limit of ",
                                                       cap.max_new_tokens(), " new tokens"));
    } else if (call.has_classify()) {
      // Checked above against the limits of common/classify_request.h, which every worker shares;
      // the worker checks the shape against the model it loads.
    } else if (call.score().input_case() == ScoreRequest::kText &&
               static_cast<int64_t>(call.score().text().size()) > int64_t{cap.max_score_tokens()} * bytes_per_token) {
      return absl::InvalidArgumentError(absl::StrCat("the text is ", call.score().text().size(), " bytes, over the scoring limit of ",
                                                     cap.max_score_tokens(), " tokens"));
    } else if (call.score().input_case() == ScoreRequest::kTokens && call.score().tokens().ids_size() > cap.max_score_tokens()) {
      return absl::InvalidArgumentError(absl::StrCat("the text has ", call.score().tokens().ids_size(),
                                                     " tokens, over the scoring limit of ", cap.max_score_tokens(), " tokens"));
    }
    call_id = absl::StrCat("c", ++next_call_);
    call.set_call_id(call_id);
    auto c = std::make_shared<Call>();
    c->id = call_id;
    c->worker_id = w->id;
    c->model = call.model();
    c->sequences = sequences;
    c->observer = std::move(observer);
    calls_[call_id] = c;
    w->calls.insert(call_id);
    w->inflight += sequences;
    if (!w->loaded.count(call.model())) w->loading.insert(call.model());
    sink = w->sink;
    *down.mutable_call() = std::move(call);
    // Sent under the lock: a Detach of this worker cannot interleave and leave the call orphaned.
    if (!sink->Send(down)) {
      calls_.erase(call_id);
      w->calls.erase(call_id);
      w->inflight -= sequences;
      return absl::UnavailableError("the chosen worker's stream is closing; retry");
    }
  }
  return call_id;
}

void InferenceRouter::Cancel(const std::string& call_id) {
  std::shared_ptr<Call> orphan;
  {
    absl::MutexLock l(&mu_);
    auto it = calls_.find(call_id);
    if (it == calls_.end() || it->second->cancel_sent) return;
    it->second->cancel_sent = true;
    auto w = worker_.find(it->second->worker_id);
    ServeDown down;
    down.mutable_cancel()->set_call_id(call_id);
    if (w != worker_.end() && w->second->sink != nullptr && w->second->sink->Send(down)) return;
    orphan = it->second;
    calls_.erase(it);
    if (w != worker_.end()) {
      w->second->calls.erase(call_id);
      w->second->inflight -= orphan->sequences;
    }
  }
  const absl::Status cancelled = absl::CancelledError("the call was cancelled");
  if (orphan->observer) orphan->observer->OnDone(cancelled);
  if (orphan->done) orphan->done(cancelled);
}

absl::Status InferenceRouter::LoadModel(const std::string& model_ref, std::function<void(absl::Status)> done) {
  auto artifact = registry_->Get(ARTIFACT_KIND_MODEL, model_ref);
  if (!artifact.ok()) return artifact.status();
  const std::string model = Resolved(*artifact);
  bool already = false;
  {
    absl::MutexLock l(&mu_);
    for (auto& [id, w] : worker_) already = already || (w->sink != nullptr && w->loaded.count(model) > 0);
    if (!already) {
      auto picked = PickWorker(model, 1);
      if (!picked.ok()) return picked.status();
      Worker* w = *picked;
      auto c = std::make_shared<Call>();
      c->id = absl::StrCat("m", ++next_call_);
      c->worker_id = w->id;
      c->model = model;
      c->sequences = 0;
      c->done = std::move(done);
      ServeDown down;
      down.mutable_model()->set_call_id(c->id);
      down.mutable_model()->set_model(model);
      *down.mutable_model()->mutable_model_files() = artifact->files();
      if (!w->sink->Send(down)) return absl::UnavailableError("the chosen worker's stream is closing; retry");
      w->loading.insert(model);
      w->calls.insert(c->id);
      calls_[c->id] = std::move(c);
    }
  }
  if (already) done(absl::OkStatus());
  return absl::OkStatus();
}

absl::Status InferenceRouter::UnloadModel(const std::string& model_ref, std::function<void(absl::Status)> done) {
  auto artifact = registry_->Get(ARTIFACT_KIND_MODEL, model_ref);
  if (!artifact.ok()) return artifact.status();
  UnloadResolved(Resolved(*artifact), std::move(done));
  return absl::OkStatus();
}

void InferenceRouter::UnloadResolved(const std::string& model, std::function<void(absl::Status)> done) {
  // One command per holder; `done` runs when the last one answers, with the first error if any.
  struct Pending {
    absl::Mutex mu;
    int left = 0;
    absl::Status first_error;
    std::function<void(absl::Status)> done;
  };
  auto pending = std::make_shared<Pending>();
  pending->done = std::move(done);
  auto answer = [pending](absl::Status s) {
    std::function<void(absl::Status)> finish;
    absl::Status result;
    {
      absl::MutexLock pl(&pending->mu);
      // A worker that had not finished loading it answers NOT_FOUND: that is unloaded too.
      if (!s.ok() && s.code() != absl::StatusCode::kNotFound && pending->first_error.ok()) pending->first_error = s;
      if (--pending->left == 0) {
        finish = std::move(pending->done);
        result = pending->first_error;
      }
    }
    if (finish) finish(result);
  };
  int failed_sends = 0;
  {
    absl::MutexLock l(&mu_);
    std::vector<Worker*> holders;
    for (auto& [id, w] : worker_)
      if (w->sink != nullptr && (w->loaded.count(model) || w->loading.count(model))) holders.push_back(w.get());
    {
      absl::MutexLock pl(&pending->mu);
      pending->left = static_cast<int>(holders.size()) + 1;  // +1: released below, after the sends
    }
    for (Worker* w : holders) {
      auto c = std::make_shared<Call>();
      c->id = absl::StrCat("m", ++next_call_);
      c->worker_id = w->id;
      c->model = model;
      c->sequences = 0;
      c->done = answer;
      ServeDown down;
      down.mutable_model()->set_call_id(c->id);
      down.mutable_model()->set_model(model);
      down.mutable_model()->set_unload(true);
      if (!w->sink->Send(down)) {
        ++failed_sends;
        continue;
      }
      w->calls.insert(c->id);
      calls_[c->id] = std::move(c);
    }
  }
  for (int i = 0; i < failed_sends; ++i) answer(absl::UnavailableError("a worker's stream is closing"));
  answer(absl::OkStatus());  // the +1: nothing held it, or every command is out
}

std::vector<ModelAvailability> InferenceRouter::Availability() {
  absl::MutexLock l(&mu_);
  std::map<std::string, ModelAvailability> by_model;
  for (auto& [id, w] : worker_) {
    if (w->sink == nullptr) continue;
    for (const auto& m : w->loaded) {
      auto& a = by_model[m];
      a.model = m;
      a.workers.push_back(id);
    }
    for (const auto& m : w->loading) {
      auto& a = by_model[m];
      a.model = m;
      a.loading = true;
    }
  }
  std::vector<ModelAvailability> out;
  for (auto& [m, a] : by_model) out.push_back(std::move(a));
  return out;
}

bool InferenceRouter::ModelReady(const std::string& resolved_model) {
  absl::MutexLock l(&mu_);
  for (auto& [id, w] : worker_)
    if (w->sink != nullptr && w->loaded.count(resolved_model)) return true;
  return false;
}

bool InferenceRouter::AnyWorker() {
  absl::MutexLock l(&mu_);
  for (auto& [id, w] : worker_)
    if (w->sink != nullptr && !w->last_load.draining()) return true;
  return false;
}

std::map<std::string, InferenceRouter::WorkerServing> InferenceRouter::ConnectedWorkers() {
  absl::MutexLock l(&mu_);
  std::map<std::string, WorkerServing> out;
  for (auto& [id, w] : worker_)
    if (w->sink != nullptr) out[id] = WorkerServing{w->capacity, w->last_load};
  return out;
}

void InferenceRouter::SetWorkersListener(std::function<void(bool)> listener) {
  {
    absl::MutexLock l(&mu_);
    workers_listener_ = std::move(listener);
  }
  NotifyWorkers();
}

void InferenceRouter::NotifyWorkers() {
  std::function<void(bool)> listener;
  {
    absl::MutexLock l(&mu_);
    listener = workers_listener_;
  }
  if (listener) listener(AnyWorker());
}

void InferenceRouter::Drain(absl::Time deadline) {
  absl::MutexLock l(&mu_);
  draining_ = true;
  auto idle = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return calls_.empty(); };
  mu_.AwaitWithDeadline(absl::Condition(&idle), deadline);
  // Under mu_: a sink is freed only after DetachWorker, which needs mu_.
  for (auto& [id, w] : worker_) {
    if (w->sink != nullptr) w->sink->CloseStream();
  }
}

absl::Status InferenceRouter::AttachWorker(const ServeHello& hello, WorkerStreamSink* sink) {
  auto record = workers_->Get(hello.worker_id());
  if (!record.ok()) {
    if (record.status().code() == absl::StatusCode::kNotFound)
      return absl::NotFoundError(absl::StrCat("worker ", hello.worker_id(), " is not registered: register first"));
    return record.status();
  }
  const WorkerCapacity& cap = hello.capacity();
  if (cap.max_sequences() < 1 || cap.max_prompt_tokens() < 1 || cap.max_new_tokens() < 1 || cap.max_score_tokens() < 2)
    return absl::InvalidArgumentError("the worker's capacity has a limit below 1");
  // The worker's --preload models, resolved before it joins: an unknown one stops it at start.
  std::vector<Artifact> preload;
  for (const auto& ref : hello.preload()) {
    auto a = registry_->Get(ARTIFACT_KIND_MODEL, ref);
    if (!a.ok())
      return absl::FailedPreconditionError(absl::StrCat("--preload ", ref, ": ", a.status().message()));
    preload.push_back(*std::move(a));
  }
  std::vector<std::shared_ptr<Call>> orphaned;
  {
    absl::MutexLock l(&mu_);
    if (draining_) return absl::UnavailableError("the server is shutting down");
    auto& slot = worker_[hello.worker_id()];
    if (slot != nullptr) {
      // A new stream of the same worker replaces the old one: the old one's calls are lost.
      for (const auto& id : slot->calls) {
        auto it = calls_.find(id);
        if (it != calls_.end()) {
          orphaned.push_back(it->second);
          calls_.erase(it);
        }
      }
    }
    slot = std::make_unique<Worker>();
    slot->id = hello.worker_id();
    slot->sink = sink;
    slot->capacity = cap;
    slot->last_load = hello.load();
    for (const auto& m : hello.load().models()) slot->loaded.insert(m.model());
    for (const auto& m : hello.load().loading()) slot->loading.insert(m);
    for (const auto& a : preload) {
      auto c = std::make_shared<Call>();
      c->id = absl::StrCat("m", ++next_call_);
      c->worker_id = slot->id;
      c->model = Resolved(a);
      c->sequences = 0;
      c->done = [model = c->model, id = slot->id](absl::Status s) {
        if (!s.ok()) Log(LogLevel::kWarning, "preload failed").Kv("worker", id).Kv("model", model).Kv("error", s);
      };
      ServeDown down;
      down.mutable_model()->set_call_id(c->id);
      down.mutable_model()->set_model(c->model);
      *down.mutable_model()->mutable_model_files() = a.files();
      down.mutable_model()->set_required(true);
      if (!sink->Send(down)) break;
      slot->loading.insert(c->model);
      slot->calls.insert(c->id);
      calls_[c->id] = std::move(c);
    }
  }
  Log(LogLevel::kInfo, "inference worker attached").Kv("worker", hello.worker_id()).Kv("device", cap.device())
      .Kv("max_sequences", cap.max_sequences());
  NotifyWorkers();
  const absl::Status lost = absl::UnavailableError("the worker serving this call reconnected; retry");
  for (auto& c : orphaned) {
    if (c->observer) c->observer->OnDone(lost);
    if (c->done) c->done(lost);
  }
  return absl::OkStatus();
}

void InferenceRouter::OnWorkerEvent(const std::string& worker_id, const InferenceEvent& event) {
  std::shared_ptr<Call> call;
  bool over = false;
  {
    absl::MutexLock l(&mu_);
    auto it = calls_.find(event.call_id());
    // Events of calls this worker does not hold (a late answer after a reconnect) are dropped.
    if (it == calls_.end() || it->second->worker_id != worker_id) return;
    call = it->second;
    over = event.last() || event.has_error();
    auto w = worker_.find(worker_id);
    if (event.has_model() && w != worker_.end()) {
      w->second->loading.erase(event.model().model());
      if (event.model().loaded()) w->second->loaded.insert(event.model().model());
      else w->second->loaded.erase(event.model().model());
    }
    if (over) {
      calls_.erase(it);
      if (w != worker_.end()) {
        w->second->calls.erase(call->id);
        w->second->inflight -= call->sequences;
      }
    }
  }
  absl::Status status = absl::OkStatus();
  if (event.has_error()) {
    int code = event.error().code();
    if (code <= 0 || code > 16) code = static_cast<int>(absl::StatusCode::kInternal);
    status = absl::Status(static_cast<absl::StatusCode>(code), event.error().message());
  }
  if (call->observer) {
    if (!event.has_error()) call->observer->OnEvent(event);
    if (over) call->observer->OnDone(status);
  } else if (call->done && over) {
    call->done(status);
  }
}

void InferenceRouter::OnWorkerLoad(const std::string& worker_id, const WorkerLoad& load) {
  bool drain_changed = false;
  {
    absl::MutexLock l(&mu_);
    auto it = worker_.find(worker_id);
    if (it == worker_.end()) return;
    drain_changed = it->second->last_load.draining() != load.draining();
    if (drain_changed && load.draining()) Log(LogLevel::kInfo, "inference worker draining").Kv("worker", worker_id);
    UpdateLoadLocked(*it->second, load);
  }
  if (drain_changed) NotifyWorkers();  // health: a draining worker does not count as serving
}

void InferenceRouter::UpdateLoadLocked(Worker& w, const WorkerLoad& load) {
  w.loaded.clear();
  for (const auto& m : load.models()) w.loaded.insert(m.model());
  // Keep models we asked it to load until it reports them (its report may predate our command).
  std::set<std::string> loading(load.loading().begin(), load.loading().end());
  for (const auto& id : w.calls) {
    auto c = calls_.find(id);
    if (c != calls_.end() && !w.loaded.count(c->second->model)) loading.insert(c->second->model);
  }
  w.loading = std::move(loading);
  w.last_load = load;
  if (metrics_ != nullptr) {
    std::map<std::string, std::pair<int64_t, int64_t>> sequences;
    for (auto& [id, other] : worker_)
      for (const auto& m : other->last_load.models()) {
        sequences[m.model()].first += m.running();
        sequences[m.model()].second += m.waiting();
      }
    metrics_->SetSequences(sequences);
  }
}

void InferenceRouter::DetachWorker(const std::string& worker_id, WorkerStreamSink* sink) {
  std::vector<std::shared_ptr<Call>> orphaned;
  {
    absl::MutexLock l(&mu_);
    auto it = worker_.find(worker_id);
    if (it == worker_.end() || it->second->sink != sink) return;  // replaced by a newer stream
    for (const auto& id : it->second->calls) {
      auto c = calls_.find(id);
      if (c != calls_.end()) {
        orphaned.push_back(c->second);
        calls_.erase(c);
      }
    }
    worker_.erase(it);
  }
  Log(LogLevel::kInfo, "inference worker detached").Kv("worker", worker_id).Kv("calls_failed", orphaned.size());
  NotifyWorkers();
  const absl::Status lost = absl::UnavailableError("the worker serving this call went away; retry");
  for (auto& c : orphaned) {
    if (c->observer) c->observer->OnDone(lost);
    if (c->done) c->done(lost);
  }
}

}  // namespace mq::server
