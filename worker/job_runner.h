// Runs one assigned job end to end on its own thread:
//   FETCH   model and dataset blobs into the cache, linked into a job directory
//   engine  LOAD .. EXPORT through the JobExecutor, progress reported as it comes
//   UPLOAD  the output directory as the job's result, then FinishJob
// Progress goes to the server from a separate reporter thread (at most ~2 calls a second and on
// every stage change), so a slow or absent server never stalls the engine. The final FinishJob is
// retried across server restarts until it is accepted or definitively refused.
#pragma once

#include <atomic>
#include <string>
#include <thread>
#include <vector>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "blob_cache.h"
#include "job_executor.h"
#include "mambaquant/v1/worker.pb.h"
#include "progress_tracker.h"
#include "server_connection.h"
#include "worker_metrics.h"

namespace mq::worker {

// Whether this worker can write what a job needs now: its job directory `work_dir` and the blob
// cache (a read-only remount, a full disk, lost permissions). One check for the agent, before it
// asks for a job, and for a job that could not start.
absl::Status ProbeJobStorage(const std::string& work_dir, const BlobCache& cache);

class JobRunner {
 public:
  enum class StopReason {
    kNone = 0,
    kCancelRequested,  // a client cancelled: stop and report CANCELLED
    kAbandon,          // the job is no longer ours (requeued) or the worker is leaving: stop, report nothing
  };

  JobRunner(const ServerConnection* server, BlobCache* cache, JobExecutor* executor, WorkerMetrics* metrics,
            std::string worker_id, std::string work_dir, mambaquant::v1::JobAssignment assignment);
  ~JobRunner();

  // Blocks until the job ended; call on a dedicated thread.
  void Run();
  void Stop(StopReason reason);
  const std::string& job_id() const { return assignment_.job_id(); }
  bool done() const { return done_.load(); }
  // The job could not start because this worker cannot write its directories: it was not ended on
  // the server (which requeues it once the worker's heartbeat stops listing it), and the worker
  // should take no job until its storage is writable again.
  bool handed_back() const { return handed_back_.load(); }

 private:
  absl::Status Fetch(const std::string& job_dir, ExecutionRequest* request);
  absl::StatusOr<std::string> UploadResult(const std::string& output_dir);
  // Ends the job on the server, retrying transient failures.
  void Finish(mambaquant::v1::JobState outcome, const std::string& error, const std::string& report_json,
              const std::string& output_dir);
  void SetProgress(mambaquant::v1::Stage stage, double fraction, const std::string& message);
  // Records the duration of stage_ (if any) and starts the next one now.
  void EndStageLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void ReporterLoop();
  bool stopped() const { return stop_.load() != static_cast<int>(StopReason::kNone); }
  // `text` with this worker's paths (the job's directory, the cache, the fetched inputs) replaced
  // by what a user can act on: progress and errors are read by every operator.
  std::string Shown(const std::string& text);

  const ServerConnection* server_;
  BlobCache* cache_;
  JobExecutor* executor_;
  WorkerMetrics* metrics_;
  const std::string worker_id_;
  const std::string work_dir_;
  const mambaquant::v1::JobAssignment assignment_;
  const absl::Time start_;

  std::atomic<int> stop_{0};  // StopReason
  std::atomic<bool> done_{false};
  std::atomic<bool> handed_back_{false};

  absl::Mutex mu_;
  ProgressTracker tracker_ ABSL_GUARDED_BY(mu_);
  mambaquant::v1::Stage stage_ ABSL_GUARDED_BY(mu_) = mambaquant::v1::STAGE_UNSPECIFIED;
  double stage_fraction_ ABSL_GUARDED_BY(mu_) = 0;
  std::string message_ ABSL_GUARDED_BY(mu_);
  std::vector<std::pair<std::string, std::string>> shown_paths_ ABSL_GUARDED_BY(mu_);  // longest first
  bool dirty_ ABSL_GUARDED_BY(mu_) = false;
  bool stage_changed_ ABSL_GUARDED_BY(mu_) = false;
  absl::Time stage_start_ ABSL_GUARDED_BY(mu_);  // when stage_ began (for the stage duration metric)
  bool reporter_exit_ ABSL_GUARDED_BY(mu_) = false;
  std::thread reporter_;
};

}  // namespace mq::worker
