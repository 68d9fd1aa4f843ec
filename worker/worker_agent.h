// The worker's membership and job loop: registers with the server, keeps its lease by heartbeat,
// long-polls for jobs while it has a free slot and runs each on a JobRunner thread.
//
// Losing the lease (the server answers NOT_FOUND) means the server already requeued this worker's
// jobs: they are abandoned and the worker registers again. Shutdown abandons running jobs too and
// deregisters, so the server requeues them at once for another worker.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blob_cache.h"
#include "job_executor.h"
#include "job_runner.h"
#include "server_connection.h"
#include "worker_metrics.h"

namespace mq::worker {

struct WorkerOptions {
  std::string name;
  std::string address;       // where this worker serves health/metrics (informational)
  std::string backend = "cpu";
  std::string device_name;
  uint64_t memory_bytes = 0;
  int max_jobs = 1;
  std::string work_dir;      // per-job directories
  int poll_wait_seconds = 20;
  std::string version = "0.1.0";
};

class WorkerAgent {
 public:
  WorkerAgent(WorkerOptions options, ServerConnection* server, BlobCache* cache, JobExecutor* executor,
              WorkerMetrics* metrics);
  ~WorkerAgent();

  void Start();
  // Stops polling, abandons running jobs (they stop promptly), deregisters and joins every thread.
  void Shutdown();
  std::string worker_id();

 private:
  struct Running {
    std::unique_ptr<JobRunner> runner;
    std::thread thread;
  };
  // Registers (again) with the server; retries until it works or the agent stops. `seen` is the
  // registration count when the caller noticed the lease was lost: if another thread registered
  // since, nothing is done (registering twice would make the server drop fresh assignments).
  bool Register(uint64_t seen);
  uint64_t registration();
  void PollLoop();
  void HeartbeatLoop();
  void AbandonAll(const std::string& why);
  void ReapFinished();
  bool stopping();
  std::vector<std::string> RunningIds();

  const WorkerOptions options_;
  ServerConnection* server_;
  BlobCache* cache_;
  JobExecutor* executor_;
  WorkerMetrics* metrics_;

  absl::Mutex register_mu_;  // one registration at a time (poll and heartbeat threads may both notice)
  absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);
  uint64_t registration_ ABSL_GUARDED_BY(mu_) = 0;  // bumped on every successful registration
  absl::Duration lease_ ABSL_GUARDED_BY(mu_) = absl::Seconds(15);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  grpc::ClientContext* poll_ctx_ ABSL_GUARDED_BY(mu_) = nullptr;  // the AcquireJob in flight, to cancel it
  bool storage_fault_ = false;  // PollLoop only: the last probe of its directories failed (logged once)
  std::map<std::string, Running> running_ ABSL_GUARDED_BY(mu_);
  std::thread poll_thread_;
  std::thread heartbeat_thread_;
};

}  // namespace mq::worker
