#include "worker_agent.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "file_util.h"
#include "grpc_status.h"
#include "log.h"

namespace mq::worker {

using namespace mambaquant::v1;  // NOLINT

WorkerAgent::WorkerAgent(WorkerOptions options, ServerConnection* server, BlobCache* cache, JobExecutor* executor,
                         WorkerMetrics* metrics)
    : options_(std::move(options)), server_(server), cache_(cache), executor_(executor), metrics_(metrics) {}

WorkerAgent::~WorkerAgent() { Shutdown(); }

std::string WorkerAgent::worker_id() {
  absl::MutexLock lock(&mu_);
  return worker_id_;
}

bool WorkerAgent::stopping() {
  absl::MutexLock lock(&mu_);
  return stopping_;
}

void WorkerAgent::Start() {
  (void)MakeDirs(options_.work_dir);
  poll_thread_ = std::thread([this] { PollLoop(); });
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
}

uint64_t WorkerAgent::registration() {
  absl::MutexLock lock(&mu_);
  return registration_;
}

bool WorkerAgent::Register(uint64_t seen) {
  absl::MutexLock reg_lock(&register_mu_);
  {
    absl::MutexLock lock(&mu_);
    if (registration_ != seen) return !stopping_;
  }
  absl::Duration backoff = absl::Milliseconds(200);
  uint64_t attempt = 0;
  for (;;) {
    RegisterWorkerRequest req;
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) return false;
      req.set_worker_id(worker_id_);
    }
    req.set_name(options_.name);
    req.set_address(options_.address);
    req.set_backend(options_.backend);
    req.set_device_name(options_.device_name);
    req.set_memory_bytes(options_.memory_bytes);
    req.set_max_concurrent_jobs(options_.max_jobs);
    req.set_version(options_.version);
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, absl::Seconds(10));
    RegisterWorkerResponse resp;
    absl::Status s = FromGrpcStatus(server_->stub->RegisterWorker(&ctx, req, &resp));
    if (s.ok()) {
      absl::MutexLock lock(&mu_);
      worker_id_ = resp.worker_id();
      lease_ = absl::Seconds(std::max(1, resp.lease_seconds()));
      ++registration_;
      if (metrics_ != nullptr) metrics_->SetRegistered(true);
      Log(LogLevel::kInfo, "registered").Kv("worker", worker_id_).Kv("lease_s", resp.lease_seconds());
      SetLogProcessField("worker", worker_id_);  // every later line of this process names it, as the server's do
      return true;
    }
    if (attempt++ % 10 == 0) Log(LogLevel::kWarning, "registration failed; retrying").Kv("error", s);
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

std::vector<std::string> WorkerAgent::RunningIds() {
  absl::MutexLock lock(&mu_);
  std::vector<std::string> ids;
  for (const auto& [id, r] : running_) {
    if (!r.runner->done()) ids.push_back(id);
  }
  return ids;
}

void WorkerAgent::AbandonAll(const std::string& why) {
  absl::MutexLock lock(&mu_);
  for (auto& [id, r] : running_) {
    if (!r.runner->done()) {
      Log(LogLevel::kWarning, "abandoning job").Kv("job", id).Kv("reason", why);
      r.runner->Stop(JobRunner::StopReason::kAbandon);
    }
  }
}

void WorkerAgent::ReapFinished() {
  std::vector<Running> finished;
  {
    absl::MutexLock lock(&mu_);
    for (auto it = running_.begin(); it != running_.end();) {
      if (it->second.runner->done()) {
        finished.push_back(std::move(it->second));
        it = running_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& r : finished) r.thread.join();
  if (!finished.empty()) cache_->Trim();
}

void WorkerAgent::PollLoop() {
  if (!Register(0)) return;
  absl::Duration backoff = absl::Milliseconds(200);
  while (!stopping()) {
    ReapFinished();
    std::string id;
    uint64_t registration_seen;
    {
      absl::MutexLock lock(&mu_);
      auto has_slot = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        int busy = 0;
        for (const auto& [jid, r] : running_) busy += r.runner->done() ? 0 : 1;
        return stopping_ || busy < options_.max_jobs;
      };
      if (!mu_.AwaitWithTimeout(absl::Condition(&has_slot), absl::Milliseconds(500))) continue;
      if (stopping_) break;
      id = worker_id_;
      registration_seen = registration_;
    }
    // A worker that cannot write its job and cache directories (a read-only remount, a full
    // disk) would fail every job it took: it takes none until it can (checked before each poll).
    const absl::Status storage = ProbeJobStorage(options_.work_dir, *cache_);
    if (!storage.ok()) {
      if (!storage_fault_) Log(LogLevel::kError, "cannot write its directories; taking no jobs until it can").Kv("error", storage);
      storage_fault_ = true;
      absl::MutexLock lock(&mu_);
      auto stop = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&stop), absl::Seconds(5));
      continue;
    }
    if (storage_fault_) Log(LogLevel::kInfo, "its directories are writable again; taking jobs");
    storage_fault_ = false;
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, absl::Seconds(options_.poll_wait_seconds + 15));
    {
      absl::MutexLock lock(&mu_);
      if (stopping_) break;
      poll_ctx_ = &ctx;
    }
    AcquireJobRequest req;
    req.set_worker_id(id);
    req.set_wait_seconds(options_.poll_wait_seconds);
    AcquireJobResponse resp;
    absl::Status s = FromGrpcStatus(server_->stub->AcquireJob(&ctx, req, &resp));
    {
      absl::MutexLock lock(&mu_);
      poll_ctx_ = nullptr;
    }
    if (s.ok()) {
      backoff = absl::Milliseconds(200);
      if (!resp.has_assignment()) continue;
      const std::string job_id = resp.assignment().job_id();
      auto runner = std::make_unique<JobRunner>(server_, cache_, executor_, metrics_, id, options_.work_dir,
                                                resp.assignment());
      JobRunner* raw = runner.get();
      absl::MutexLock lock(&mu_);
      if (stopping_) {
        // Never started: the server requeues it when this worker deregisters.
        break;
      }
      Running& slot = running_[job_id];
      if (slot.runner != nullptr) continue;  // already running it (duplicate delivery)
      slot.runner = std::move(runner);
      slot.thread = std::thread([raw] { raw->Run(); });
      continue;
    }
    if (stopping()) break;
    if (absl::IsNotFound(s)) {
      if (registration() == registration_seen) {
        AbandonAll("lease lost");
        if (metrics_ != nullptr) metrics_->SetRegistered(false);
      }
      if (!Register(registration_seen)) break;
      continue;
    }
    Log(LogLevel::kDebug, "AcquireJob failed").Kv("error", s);
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

void WorkerAgent::HeartbeatLoop() {
  absl::Time next = absl::Now();
  uint64_t failures = 0;
  for (;;) {
    absl::Duration lease;
    std::string id;
    uint64_t registration;
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stopping_; };
      mu_.AwaitWithDeadline(absl::Condition(&wake), next);
      if (stopping_) return;
      lease = lease_;
      id = worker_id_;
      registration = registration_;
    }
    if (id.empty()) {  // not registered yet: look again soon, the lease is not known
      next = absl::Now() + absl::Milliseconds(100);
      continue;
    }
    next = absl::Now() + std::max(absl::Milliseconds(200), lease / 3);
    HeartbeatRequest req;
    req.set_worker_id(id);
    for (auto& jid : RunningIds()) req.add_running_job_ids(jid);
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, std::max(absl::Seconds(1), lease / 3));
    ctx.set_wait_for_ready(true);  // ride out a reconnect instead of failing at once
    HeartbeatResponse resp;
    absl::Status s = FromGrpcStatus(server_->stub->Heartbeat(&ctx, req, &resp));
    if (metrics_ != nullptr) metrics_->SetCacheCounts(cache_->hits(), cache_->misses(), cache_->fetched_bytes());
    if (s.ok()) {
      failures = 0;
      absl::MutexLock lock(&mu_);
      for (const auto& jid : resp.cancel_job_ids()) {
        auto it = running_.find(jid);
        if (it != running_.end()) it->second.runner->Stop(JobRunner::StopReason::kCancelRequested);
      }
      continue;
    }
    if (absl::IsNotFound(s)) {
      if (this->registration() != registration) continue;  // the poll thread registered meanwhile
      AbandonAll("lease lost");
      if (metrics_ != nullptr) metrics_->SetRegistered(false);
      if (!Register(registration)) return;
      continue;
    }
    if (failures++ % 10 == 0) Log(LogLevel::kWarning, "heartbeat failed").Kv("error", s);
  }
}

void WorkerAgent::Shutdown() {
  std::string id;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    stopping_ = true;
    if (poll_ctx_ != nullptr) poll_ctx_->TryCancel();
    id = worker_id_;
  }
  AbandonAll("worker shutting down");
  if (poll_thread_.joinable()) poll_thread_.join();
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  std::map<std::string, Running> running;
  {
    absl::MutexLock lock(&mu_);
    running.swap(running_);
  }
  for (auto& [jid, r] : running) r.thread.join();
  if (!id.empty()) {
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, absl::Seconds(5));
    DeregisterRequest req;
    req.set_worker_id(id);
    DeregisterResponse resp;
    absl::Status s = FromGrpcStatus(server_->stub->Deregister(&ctx, req, &resp));
    Log(LogLevel::kInfo, "deregistered").Kv("worker", id).Kv("status", s);
  }
}

}  // namespace mq::worker
