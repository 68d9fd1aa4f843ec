// Assigns queued jobs to live workers and keeps worker membership honest.
//
// Workers long-poll (WorkerService.AcquireJob): each poll becomes a waiter here. One scheduler
// thread does all the work that touches the store on behalf of waiters, so RPC reactions never
// wait on it. Each tick (and whenever Notify() is called) it:
//   1. drops workers whose lease expired and takes their jobs back (requeue, or CANCELLED when
//      cancellation was requested, or FAILED after max_attempts);
//   2. answers waiters whose wait is over with "no job";
//   3. hands the oldest queued job a waiter's backend can run to each waiter whose worker has a
//      free slot; the assignment is committed before the waiter is answered.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "job_event_hub.h"
#include "job_store.h"
#include "mambaquant/v1/worker.pb.h"
#include "registry.h"
#include "worker_store.h"

namespace mq::server {

class ServerMetrics;

struct SchedulerOptions {
  absl::Duration lease = absl::Seconds(15);  // worker lease length
  int max_attempts = 3;                      // assignments per job before it FAILs
  absl::Duration tick = absl::Milliseconds(250);
  absl::Duration upload_ttl = absl::Hours(24);
  // Unreferenced blobs (left by rejected, aborted or expired uploads) older than this are removed
  // by a sweep every blob_gc_interval.
  absl::Duration blob_gc_grace = absl::Minutes(10);
  absl::Duration blob_gc_interval = absl::Minutes(10);
};

class Scheduler {
 public:
  // Called exactly once per waiter: with an assignment, or nullopt when the wait ended empty.
  using DeliverFn = std::function<void(std::optional<mambaquant::v1::JobAssignment>)>;
  using ClockFn = std::function<absl::Time()>;

  Scheduler(JobStore* jobs, WorkerStore* workers, Registry* registry, UploadManager* uploads, JobEventHub* hub,
            ServerMetrics* metrics, SchedulerOptions options, ClockFn clock = absl::Now);
  ~Scheduler();

  void Start();
  // Answers every waiter with nullopt, refuses new ones and joins the thread.
  void Stop();

  // Waiter ids are taken first, so a caller knows its id before `deliver` can possibly run.
  uint64_t NewWaiterId() { return next_waiter_id_.fetch_add(1); }
  // Registers a waiting poll. Delivers nullopt at once when stopping.
  void AddWaiter(uint64_t id, const std::string& worker_id, absl::Time deadline, DeliverFn deliver);
  // Removes a waiter whose call was cancelled. False when it is already being answered (then
  // `deliver` runs or ran).
  bool RemoveWaiter(uint64_t id);
  // Wakes the thread (a job was queued or a worker freed a slot).
  void Notify();

  // One scheduling pass; the thread calls it, tests call it directly with a fake clock.
  void Tick();

  // Takes a worker out of the pool now (Deregister, or re-registration after expiry).
  void DropWorker(const std::string& worker_id, const std::string& reason);

  // The assignment message for a job (resolved files of its model and datasets).
  absl::StatusOr<mambaquant::v1::JobAssignment> BuildAssignment(const mambaquant::v1::Job& job);

  size_t waiter_count();

 private:
  struct Waiter {
    uint64_t id;
    std::string worker_id;
    absl::Time deadline;
    DeliverFn deliver;
  };
  void Run();
  void ExpireLeases(absl::Time now);
  void RefreshMetrics();

  JobStore* jobs_;
  WorkerStore* workers_;
  Registry* registry_;
  UploadManager* uploads_;
  JobEventHub* hub_;
  ServerMetrics* metrics_;  // may be null (tests)
  const SchedulerOptions options_;
  ClockFn clock_;

  absl::Mutex mu_;
  std::deque<Waiter> waiters_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> next_waiter_id_{1};
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  bool notified_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;
  absl::Time last_metrics_ = absl::InfinitePast();  // scheduler thread only
  absl::Time last_gc_ = absl::InfinitePast();       // scheduler thread only
  absl::Time last_blob_gc_ = absl::InfinitePast();  // scheduler thread only
};

}  // namespace mq::server
