#include "scheduler.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "job_state.h"
#include "log.h"
#include "name_validation.h"
#include "server_metrics.h"

namespace mq::server {

using mambaquant::v1::Job;
using mambaquant::v1::JobAssignment;

Scheduler::Scheduler(JobStore* jobs, WorkerStore* workers, Registry* registry, UploadManager* uploads,
                     JobEventHub* hub, ServerMetrics* metrics, SchedulerOptions options, ClockFn clock)
    : jobs_(jobs),
      workers_(workers),
      registry_(registry),
      uploads_(uploads),
      hub_(hub),
      metrics_(metrics),
      options_(options),
      clock_(std::move(clock)) {}

Scheduler::~Scheduler() { Stop(); }

void Scheduler::Start() { thread_ = std::thread([this] { Run(); }); }

void Scheduler::Stop() {
  std::deque<Waiter> waiters;
  {
    absl::MutexLock lock(&mu_);
    stopping_ = true;
    waiters.swap(waiters_);
  }
  for (auto& w : waiters) w.deliver(std::nullopt);
  if (thread_.joinable()) thread_.join();
}

void Scheduler::AddWaiter(uint64_t id, const std::string& worker_id, absl::Time deadline, DeliverFn deliver) {
  {
    absl::MutexLock lock(&mu_);
    if (!stopping_) {
      waiters_.push_back(Waiter{id, worker_id, deadline, std::move(deliver)});
      notified_ = true;
      return;
    }
  }
  deliver(std::nullopt);
}

bool Scheduler::RemoveWaiter(uint64_t id) {
  absl::MutexLock lock(&mu_);
  for (auto it = waiters_.begin(); it != waiters_.end(); ++it) {
    if (it->id == id) {
      waiters_.erase(it);
      return true;
    }
  }
  return false;
}

void Scheduler::Notify() {
  absl::MutexLock lock(&mu_);
  notified_ = true;
}

size_t Scheduler::waiter_count() {
  absl::MutexLock lock(&mu_);
  return waiters_.size();
}

void Scheduler::Run() {
  for (;;) {
    {
      absl::MutexLock lock(&mu_);
      auto wake = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return notified_ || stopping_; };
      mu_.AwaitWithTimeout(absl::Condition(&wake), options_.tick);
      if (stopping_) return;
      notified_ = false;
    }
    Tick();
  }
}

void Scheduler::DropWorker(const std::string& worker_id, const std::string& reason) {
  std::vector<Job> changed;
  const absl::Time now = clock_();
  absl::Status rm = registry_->store()->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto released = jobs_->ReleaseWorkerJobsTx(tx, worker_id, reason, options_.max_attempts, now, {},
                                               absl::ZeroDuration());
    if (!released.ok()) return released.status();
    changed = *std::move(released);
    return workers_->RemoveTx(tx, worker_id);
  });
  for (const Job& job : changed) {
    Log(LogLevel::kWarning, "job taken back from worker")
        .Kv("job", job.id()).Kv("worker", worker_id).Kv("state", JobStateName(job.state())).Kv("reason", reason);
    hub_->Publish(job);
  }
  if (!rm.ok()) Log(LogLevel::kError, "removing worker failed").Kv("worker", worker_id).Kv("error", rm);
  Notify();
}

void Scheduler::ExpireLeases(absl::Time now) {
  auto expired = workers_->Expired(now);
  if (!expired.ok()) {
    Log(LogLevel::kError, "listing expired workers failed").Kv("error", expired.status());
    return;
  }
  for (const std::string& id : *expired) {
    std::vector<Job> changed;
    absl::Status s = registry_->store()->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
      auto released = jobs_->ReleaseWorkerJobsTx(tx, id, "worker lease expired", options_.max_attempts, now, {},
                                                 absl::ZeroDuration());
      if (!released.ok()) return released.status();
      changed = *std::move(released);
      return workers_->RemoveTx(tx, id);
    });
    if (!s.ok()) {
      Log(LogLevel::kError, "expiring worker failed").Kv("worker", id).Kv("error", s);
      continue;
    }
    if (metrics_ != nullptr) metrics_->LeaseExpired();
    Log(LogLevel::kWarning, "worker lease expired").Kv("worker", id).Kv("jobs_released", static_cast<int64_t>(changed.size()));
    for (const Job& job : changed) {
      Log(LogLevel::kInfo, "job released").Kv("job", job.id()).Kv("state", JobStateName(job.state()));
      hub_->Publish(job);
    }
  }
}

absl::StatusOr<JobAssignment> Scheduler::BuildAssignment(const Job& job) {
  JobAssignment a;
  a.set_job_id(job.id());
  a.set_attempt(job.attempt());
  *a.mutable_spec() = job.spec();
  auto model = registry_->Get(mambaquant::v1::ARTIFACT_KIND_MODEL, job.spec().model());
  if (!model.ok()) return model.status();
  *a.mutable_model_files() = model->files();
  auto calib = registry_->Get(mambaquant::v1::ARTIFACT_KIND_DATASET, job.spec().calib_dataset());
  if (!calib.ok()) return calib.status();
  *a.mutable_calib_file() = calib->files(0);
  if (!job.spec().eval_dataset().empty()) {
    auto eval = registry_->Get(mambaquant::v1::ARTIFACT_KIND_DATASET, job.spec().eval_dataset());
    if (!eval.ok()) return eval.status();
    *a.mutable_eval_file() = eval->files(0);
  }
  return a;
}

void Scheduler::Tick() {
  const absl::Time now = clock_();
  ExpireLeases(now);

  // Take the waiters out, decide for each without holding mu_, put back the unanswered ones.
  std::deque<Waiter> waiters;
  {
    absl::MutexLock lock(&mu_);
    if (stopping_) return;
    waiters.swap(waiters_);
  }
  std::deque<Waiter> keep;
  std::vector<std::pair<Waiter, std::optional<JobAssignment>>> answers;
  for (Waiter& w : waiters) {
    auto worker = workers_->Get(w.worker_id);
    if (!worker.ok()) {  // dropped: the next heartbeat tells it to register again
      answers.emplace_back(std::move(w), std::nullopt);
      continue;
    }
    std::optional<JobAssignment> assignment;
    {
      auto held = jobs_->CountOnWorker(w.worker_id);
      int capacity = std::max(1, worker->info.max_concurrent_jobs());
      if (held.ok() && *held < capacity) {
        auto job = jobs_->AssignNext(w.worker_id, worker->info.backend(), now);
        if (!job.ok()) {
          Log(LogLevel::kError, "assigning a job failed").Kv("worker", w.worker_id).Kv("error", job.status());
        } else if (job->has_value()) {
          const Job& j = **job;
          auto built = BuildAssignment(j);
          if (built.ok()) {
            Log(LogLevel::kInfo, "job assigned").Kv("job", j.id()).Kv("worker", w.worker_id).Kv("attempt", j.attempt());
            hub_->Publish(j);
            assignment = *std::move(built);
          } else {
            // The inputs vanished (they cannot be deleted while the job is unfinished, so this is
            // store damage): fail the job rather than hand out something unrunnable.
            Job failed = j;
            absl::Status s = registry_->store()->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
              auto f = jobs_->FinishTx(tx, w.worker_id, j.id(), mambaquant::v1::JOB_STATE_FAILED,
                                       absl::StrCat("inputs unavailable: ", built.status().message()), "", now);
              if (f.ok()) failed = *f;
              return f.status();
            });
            Log(LogLevel::kError, "job inputs unavailable").Kv("job", j.id()).Kv("error", built.status()).Kv("fail_status", s);
            hub_->Publish(failed);
          }
        }
      }
    }
    if (assignment.has_value()) {
      answers.emplace_back(std::move(w), std::move(assignment));
    } else if (now >= w.deadline) {
      answers.emplace_back(std::move(w), std::nullopt);
    } else {
      keep.push_back(std::move(w));
    }
  }
  {
    absl::MutexLock lock(&mu_);
    // Waiters added meanwhile go after the ones kept, preserving FIFO order.
    for (auto it = keep.rbegin(); it != keep.rend(); ++it) waiters_.push_front(std::move(*it));
  }
  for (auto& [waiter, assignment] : answers) waiter.deliver(std::move(assignment));

  if (now - last_gc_ > absl::Minutes(1)) {
    last_gc_ = now;
    uploads_->CollectStale(now, options_.upload_ttl);
  }
  if (now - last_blob_gc_ > options_.blob_gc_interval) {
    last_blob_gc_ = now;
    auto removed = registry_->CollectUnreferencedBlobs(now, options_.blob_gc_grace);
    if (!removed.ok()) Log(LogLevel::kWarning, "blob garbage collection failed").Kv("error", removed.status());
  }
  if (metrics_ != nullptr && now - last_metrics_ > absl::Seconds(1)) {
    last_metrics_ = now;
    RefreshMetrics();
  }
}

void Scheduler::RefreshMetrics() {
  auto counts = jobs_->CountByState();
  if (counts.ok()) metrics_->SetJobCounts(*counts);
  auto workers = workers_->List();
  if (workers.ok()) {
    std::map<std::string, int64_t> by_backend;
    for (const auto& w : *workers) by_backend[w.info.backend()]++;
    metrics_->SetWorkers(by_backend);
  }
  metrics_->SetWaitingPolls(static_cast<int64_t>(waiter_count()));
}

}  // namespace mq::server
