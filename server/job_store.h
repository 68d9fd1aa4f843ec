// Persistent jobs. The row holds the full mambaquant.v1.Job snapshot plus the columns that
// queries filter on. Every method that changes a job commits before returning, so a caller may
// acknowledge the change (reply to a client, notify watchers) as soon as it returns.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mambaquant/v1/common.pb.h"
#include "mambaquant/v1/worker.pb.h"
#include "sqlite_db.h"

namespace mq::server {

struct JobListFilter {
  std::vector<mambaquant::v1::JobState> states;  // any when empty
  std::string model_name;                        // any when empty
  int page_size = 100;
  std::string page_token;
};

struct JobPage {
  std::vector<mambaquant::v1::Job> jobs;
  std::string next_page_token;
};

struct ProgressUpdate {
  mambaquant::v1::Stage stage = mambaquant::v1::STAGE_UNSPECIFIED;
  double stage_fraction = 0;
  double fraction = 0;
  double eta_seconds = -1;
  std::string message;
};

class JobStore {
 public:
  explicit JobStore(SqliteDb* db) : db_(db) {}

  // Persists a new QUEUED job for an already validated and resolved spec. `model_name` is the
  // source model's name (for filtering). RESOURCE_EXHAUSTED when max_queued jobs already wait.
  absl::StatusOr<mambaquant::v1::Job> Create(const mambaquant::v1::QuantSpec& spec, const std::string& model_name,
                                             int64_t max_queued, absl::Time now);
  absl::StatusOr<mambaquant::v1::Job> Get(const std::string& id);
  absl::StatusOr<mambaquant::v1::Job> GetTx(SqliteTx& tx, const std::string& id);
  absl::StatusOr<JobPage> List(const JobListFilter& filter);

  // QUEUED -> CANCELLED at once; ASSIGNED/RUNNING -> cancel_requested. FAILED_PRECONDITION when
  // the job already ended.
  absl::StatusOr<mambaquant::v1::Job> Cancel(const std::string& id, absl::Time now);

  // Moves the oldest QUEUED job runnable on `backend` to ASSIGNED for `worker_id` (attempt + 1).
  // nullopt when nothing is queued for it.
  absl::StatusOr<std::optional<mambaquant::v1::Job>> AssignNext(const std::string& worker_id,
                                                                 const std::string& backend, absl::Time now);

  // Records progress of a job held by `worker_id` (ASSIGNED -> RUNNING on the first report).
  // FAILED_PRECONDITION when the job is not (any more) on that worker.
  absl::StatusOr<mambaquant::v1::Job> ReportProgress(const std::string& worker_id, const std::string& job_id,
                                                     const ProgressUpdate& progress, absl::Time now);

  // Ends a job held by `worker_id` inside the caller's transaction (so a result model can be
  // registered atomically with it). Repeating an identical finish of an ended job returns it
  // unchanged (idempotent retries); anything else on an ended job is FAILED_PRECONDITION.
  absl::StatusOr<mambaquant::v1::Job> FinishTx(SqliteTx& tx, const std::string& worker_id,
                                               const std::string& job_id, mambaquant::v1::JobState outcome,
                                               const std::string& error, const std::string& result_model,
                                               absl::Time now);

  // Takes the jobs held by `worker_id` back (the worker died, left, or forgot them): back to
  // QUEUED, or CANCELLED when cancellation was requested, or FAILED when they already used
  // max_attempts. Jobs in `keep` are left alone; `min_assigned_age` spares jobs assigned or
  // updated by progress more recently than that (the assignment may still be in flight, or the
  // heartbeat raced the job's start). Returns changed jobs.
  absl::StatusOr<std::vector<mambaquant::v1::Job>> ReleaseWorkerJobs(
      const std::string& worker_id, const std::string& reason, int max_attempts, absl::Time now,
      const std::set<std::string>& keep = {}, absl::Duration min_assigned_age = absl::ZeroDuration());
  absl::StatusOr<std::vector<mambaquant::v1::Job>> ReleaseWorkerJobsTx(
      SqliteTx& tx, const std::string& worker_id, const std::string& reason, int max_attempts, absl::Time now,
      const std::set<std::string>& keep, absl::Duration min_assigned_age);

  // Jobs held by `worker_id` with cancel_requested set.
  absl::StatusOr<std::vector<std::string>> CancelRequestedOnWorker(const std::string& worker_id);
  // Number of jobs ASSIGNED/RUNNING on the worker.
  absl::StatusOr<int64_t> CountOnWorker(const std::string& worker_id);
  // Jobs not yet terminal (QUEUED, ASSIGNED, RUNNING).
  absl::StatusOr<std::vector<mambaquant::v1::Job>> UnfinishedJobsTx(SqliteTx& tx);
  absl::StatusOr<std::map<mambaquant::v1::JobState, int64_t>> CountByState();

 private:
  absl::Status PutTx(SqliteTx& tx, const mambaquant::v1::Job& job);
  SqliteDb* db_;
};

}  // namespace mq::server
