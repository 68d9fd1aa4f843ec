#include "job_store.h"

#include <functional>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "job_state.h"
#include "page_limits.h"
#include "proto_time.h"
#include "random_id.h"

namespace mq::server {

using mambaquant::v1::Job;
using mambaquant::v1::JobState;

namespace {

absl::StatusOr<Job> ParseJob(const std::string& bytes) {
  Job job;
  if (!job.ParseFromString(bytes)) return absl::DataLossError("stored job does not parse");
  return job;
}

void Touch(Job* job, absl::Time now) { SetTimestamp(now, job->mutable_update_time()); }

void EnterState(Job* job, JobState to, absl::Time now) {
  job->set_state(to);
  Touch(job, now);
  if (IsTerminal(to)) SetTimestamp(now, job->mutable_finish_time());
}

// Steps `stmt`, whose column 0 is a stored Job, handing each parsed job to `fn` until it returns
// false or the rows run out.
absl::Status ForEachJobRow(SqliteStmt& stmt, const std::function<bool(Job)>& fn) {
  for (;;) {
    auto row = stmt.Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    auto job = ParseJob(stmt.Blob(0));
    if (!job.ok()) return job.status();
    if (!fn(*std::move(job))) return absl::OkStatus();
  }
}

// The backend a spec needs ("" = any), compared with the worker's.
bool BackendMatches(const Job& job, const std::string& backend) {
  return job.spec().backend().empty() || job.spec().backend() == backend;
}

}  // namespace

absl::Status JobStore::PutTx(SqliteTx& tx, const Job& job) {
  auto stmt = tx.Prepare("UPDATE jobs SET state = ?1, worker_id = ?2, job = ?3 WHERE id = ?4");
  if (!stmt.ok()) return stmt.status();
  std::string bytes = job.SerializeAsString();
  stmt->Bind(1, static_cast<int64_t>(job.state())).Bind(2, job.worker_id()).BindBlob(3, bytes).Bind(4, job.id());
  absl::Status s = stmt->Run();
  if (!s.ok()) return s;
  if (tx.Changes() != 1) return absl::NotFoundError(absl::StrCat("job ", job.id(), " not found"));
  return absl::OkStatus();
}

absl::StatusOr<Job> JobStore::Create(const mambaquant::v1::QuantSpec& spec, const std::string& model_name,
                                     int64_t max_queued, absl::Time now) {
  Job job;
  job.set_id(NewJobId());
  *job.mutable_spec() = spec;
  job.set_state(JobState::JOB_STATE_QUEUED);
  job.set_eta_seconds(-1);
  SetTimestamp(now, job.mutable_create_time());
  SetTimestamp(now, job.mutable_update_time());
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    if (max_queued > 0) {
      auto count = tx.Prepare("SELECT COUNT(*) FROM jobs WHERE state = ?1");
      if (!count.ok()) return count.status();
      count->Bind(1, static_cast<int64_t>(JobState::JOB_STATE_QUEUED));
      auto row = count->Step();
      if (!row.ok()) return row.status();
      if (count->Int(0) >= max_queued) {
        return absl::ResourceExhaustedError(
            absl::StrCat("the queue is full (", max_queued, " jobs waiting); retry later"));
      }
    }
    auto stmt = tx.Prepare("INSERT INTO jobs (id, state, model_name, worker_id, job) VALUES (?1, ?2, ?3, '', ?4)");
    if (!stmt.ok()) return stmt.status();
    std::string bytes = job.SerializeAsString();
    stmt->Bind(1, job.id()).Bind(2, static_cast<int64_t>(job.state())).Bind(3, model_name).BindBlob(4, bytes);
    return stmt->Run();
  });
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<Job> JobStore::GetTx(SqliteTx& tx, const std::string& id) {
  auto stmt = tx.Prepare("SELECT job FROM jobs WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("job ", id, " not found"));
  return ParseJob(stmt->Blob(0));
}

absl::StatusOr<Job> JobStore::Get(const std::string& id) {
  absl::StatusOr<Job> out = absl::InternalError("unset");
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    out = GetTx(tx, id);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<JobPage> JobStore::List(const JobListFilter& filter) {
  int page_size = filter.page_size <= 0 ? 100 : filter.page_size;
  if (page_size > 1000) return absl::InvalidArgumentError("page_size must be at most 1000");
  int64_t before_seq = INT64_MAX;
  if (!filter.page_token.empty()) {
    if (filter.page_token[0] != 's' || !absl::SimpleAtoi(filter.page_token.substr(1), &before_seq) || before_seq <= 0) {
      return absl::InvalidArgumentError("invalid page_token");
    }
  }
  std::string sql = "SELECT seq, job FROM jobs WHERE seq < ?1";
  if (!filter.states.empty()) {
    std::vector<std::string> states;
    for (JobState st : filter.states) states.push_back(absl::StrCat(static_cast<int>(st)));
    absl::StrAppend(&sql, " AND state IN (", absl::StrJoin(states, ","), ")");
  }
  if (!filter.model_name.empty()) absl::StrAppend(&sql, " AND model_name = ?2");
  absl::StrAppend(&sql, " ORDER BY seq DESC LIMIT ", page_size + 1);
  JobPage page;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare(sql);
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, before_seq);
    if (!filter.model_name.empty()) stmt->Bind(2, filter.model_name);
    int64_t last_seq = 0;
    size_t page_bytes = 0;
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      const std::string blob = stmt->Blob(1);
      if (static_cast<int>(page.jobs.size()) == page_size ||
          (!page.jobs.empty() && page_bytes + blob.size() > kMaxListPageBytes)) {
        page.next_page_token = absl::StrCat("s", last_seq);
        break;
      }
      page_bytes += blob.size();
      auto job = ParseJob(blob);
      if (!job.ok()) return job.status();
      last_seq = stmt->Int(0);
      page.jobs.push_back(*std::move(job));
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return page;
}

absl::StatusOr<Job> JobStore::Cancel(const std::string& id, absl::Time now) {
  Job job;
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto got = GetTx(tx, id);
    if (!got.ok()) return got.status();
    job = *std::move(got);
    if (IsTerminal(job.state())) {
      return absl::FailedPreconditionError(
          absl::StrCat("job ", id, " already ended ", JobStateName(job.state()), "; nothing to cancel"));
    }
    job.set_cancel_requested(true);
    if (job.state() == JobState::JOB_STATE_QUEUED) {
      EnterState(&job, JobState::JOB_STATE_CANCELLED, now);
      job.set_error("cancelled while queued");
    } else {
      Touch(&job, now);
    }
    return PutTx(tx, job);
  });
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<std::optional<Job>> JobStore::AssignNext(const std::string& worker_id, const std::string& backend,
                                                        absl::Time now) {
  std::optional<Job> assigned;
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    {
      auto stmt = tx.Prepare("SELECT job FROM jobs WHERE state = ?1 ORDER BY seq ASC");
      if (!stmt.ok()) return stmt.status();
      stmt->Bind(1, static_cast<int64_t>(JobState::JOB_STATE_QUEUED));
      absl::Status scan = ForEachJobRow(*stmt, [&](Job job) {
        if (!BackendMatches(job, backend)) return true;
        assigned = std::move(job);
        return false;
      });
      if (!scan.ok()) return scan;
    }  // the SELECT is finalized before the row is rewritten
    if (!assigned) return absl::OkStatus();
    Job& job = *assigned;
    absl::Status t = CheckTransition(job.state(), JobState::JOB_STATE_ASSIGNED);
    if (!t.ok()) return t;
    EnterState(&job, JobState::JOB_STATE_ASSIGNED, now);
    job.set_worker_id(worker_id);
    job.set_attempt(job.attempt() + 1);
    job.set_stage(mambaquant::v1::STAGE_UNSPECIFIED);
    job.set_stage_fraction(0);
    job.set_fraction(0);
    job.set_eta_seconds(-1);
    job.set_message(absl::StrCat("assigned to ", worker_id));
    if (!job.has_start_time()) SetTimestamp(now, job.mutable_start_time());
    return PutTx(tx, job);
  });
  if (!s.ok()) return s;
  return assigned;
}

absl::StatusOr<Job> JobStore::ReportProgress(const std::string& worker_id, const std::string& job_id,
                                             const ProgressUpdate& progress, absl::Time now) {
  Job job;
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto got = GetTx(tx, job_id);
    if (!got.ok()) return got.status();
    job = *std::move(got);
    if (!IsOnWorker(job.state()) || job.worker_id() != worker_id) {
      return absl::FailedPreconditionError(absl::StrCat("job ", job_id, " is ", JobStateName(job.state()),
                                                        " and not held by worker ", worker_id));
    }
    if (job.state() == JobState::JOB_STATE_ASSIGNED) EnterState(&job, JobState::JOB_STATE_RUNNING, now);
    job.set_stage(progress.stage);
    job.set_stage_fraction(progress.stage_fraction);
    job.set_fraction(progress.fraction);
    job.set_eta_seconds(progress.eta_seconds);
    job.set_message(progress.message);
    Touch(&job, now);
    return PutTx(tx, job);
  });
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<Job> JobStore::FinishTx(SqliteTx& tx, const std::string& worker_id, const std::string& job_id,
                                       JobState outcome, const std::string& error, const std::string& result_model,
                                       absl::Time now) {
  if (!IsTerminal(outcome)) return absl::InvalidArgumentError("outcome must be SUCCEEDED, FAILED or CANCELLED");
  auto got = GetTx(tx, job_id);
  if (!got.ok()) return got.status();
  Job job = *std::move(got);
  if (IsTerminal(job.state())) {
    if (job.state() == outcome && job.worker_id() == worker_id) return job;  // a retried FinishJob
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " already ended ", JobStateName(job.state())));
  }
  if (!IsOnWorker(job.state()) || job.worker_id() != worker_id) {
    return absl::FailedPreconditionError(
        absl::StrCat("job ", job_id, " is ", JobStateName(job.state()), " and not held by worker ", worker_id));
  }
  absl::Status t = CheckTransition(job.state(), outcome);
  if (!t.ok()) return t;
  EnterState(&job, outcome, now);
  job.set_error(error);
  job.set_eta_seconds(0);
  if (outcome == JobState::JOB_STATE_SUCCEEDED) {
    job.set_result_model(result_model);
    job.set_fraction(1);
    job.set_message("done");
  }
  absl::Status s = PutTx(tx, job);
  if (!s.ok()) return s;
  return job;
}

absl::StatusOr<std::vector<Job>> JobStore::ReleaseWorkerJobsTx(SqliteTx& tx, const std::string& worker_id,
                                                                const std::string& reason, int max_attempts,
                                                                absl::Time now, const std::set<std::string>& keep,
                                                                absl::Duration min_assigned_age) {
  std::vector<Job> held;
  {
    auto stmt = tx.Prepare("SELECT job FROM jobs WHERE worker_id = ?1 AND state IN (?2, ?3)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, worker_id)
        .Bind(2, static_cast<int64_t>(JobState::JOB_STATE_ASSIGNED))
        .Bind(3, static_cast<int64_t>(JobState::JOB_STATE_RUNNING));
    absl::Status scan = ForEachJobRow(*stmt, [&](Job job) {
      held.push_back(std::move(job));
      return true;
    });
    if (!scan.ok()) return scan;
  }
  std::vector<Job> changed;
  for (Job& job : held) {
    if (keep.count(job.id())) continue;
    // A recent assignment may still be in flight to the worker, and recent progress shows the
    // worker runs the job whatever its last heartbeat listed.
    if (now - FromTimestamp(job.update_time()) < min_assigned_age) continue;
    if (job.cancel_requested()) {
      EnterState(&job, JobState::JOB_STATE_CANCELLED, now);
      job.set_error(absl::StrCat("cancelled (", reason, ")"));
    } else if (max_attempts > 0 && job.attempt() >= max_attempts) {
      EnterState(&job, JobState::JOB_STATE_FAILED, now);
      job.set_error(absl::StrCat(reason, "; gave up after ", job.attempt(), " attempts"));
    } else {
      EnterState(&job, JobState::JOB_STATE_QUEUED, now);
      job.set_message(absl::StrCat("requeued: ", reason));
      job.set_stage(mambaquant::v1::STAGE_UNSPECIFIED);
      job.set_stage_fraction(0);
      job.set_fraction(0);
      job.set_eta_seconds(-1);
    }
    // worker_id stays: the last worker that held the job, for the record.
    absl::Status s = PutTx(tx, job);
    if (!s.ok()) return s;
    changed.push_back(job);
  }
  return changed;
}

absl::StatusOr<std::vector<Job>> JobStore::ReleaseWorkerJobs(const std::string& worker_id, const std::string& reason,
                                                              int max_attempts, absl::Time now,
                                                              const std::set<std::string>& keep,
                                                              absl::Duration min_assigned_age) {
  std::vector<Job> changed;
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto got = ReleaseWorkerJobsTx(tx, worker_id, reason, max_attempts, now, keep, min_assigned_age);
    if (!got.ok()) return got.status();
    changed = *std::move(got);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return changed;
}

absl::StatusOr<std::vector<std::string>> JobStore::CancelRequestedOnWorker(const std::string& worker_id) {
  std::vector<std::string> ids;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT job FROM jobs WHERE worker_id = ?1 AND state IN (?2, ?3)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, worker_id)
        .Bind(2, static_cast<int64_t>(JobState::JOB_STATE_ASSIGNED))
        .Bind(3, static_cast<int64_t>(JobState::JOB_STATE_RUNNING));
    return ForEachJobRow(*stmt, [&](Job job) {
      if (job.cancel_requested()) ids.push_back(job.id());
      return true;
    });
  });
  if (!s.ok()) return s;
  return ids;
}

absl::StatusOr<int64_t> JobStore::CountOnWorker(const std::string& worker_id) {
  int64_t n = 0;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT COUNT(*) FROM jobs WHERE worker_id = ?1 AND state IN (?2, ?3)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, worker_id)
        .Bind(2, static_cast<int64_t>(JobState::JOB_STATE_ASSIGNED))
        .Bind(3, static_cast<int64_t>(JobState::JOB_STATE_RUNNING));
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    n = stmt->Int(0);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return n;
}

absl::StatusOr<std::vector<Job>> JobStore::UnfinishedJobsTx(SqliteTx& tx) {
  std::vector<Job> jobs;
  auto stmt = tx.Prepare("SELECT job FROM jobs WHERE state IN (?1, ?2, ?3)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(JobState::JOB_STATE_QUEUED))
      .Bind(2, static_cast<int64_t>(JobState::JOB_STATE_ASSIGNED))
      .Bind(3, static_cast<int64_t>(JobState::JOB_STATE_RUNNING));
  absl::Status scan = ForEachJobRow(*stmt, [&](Job job) {
    jobs.push_back(std::move(job));
    return true;
  });
  if (!scan.ok()) return scan;
  return jobs;
}

absl::StatusOr<std::map<JobState, int64_t>> JobStore::CountByState() {
  std::map<JobState, int64_t> counts;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT state, COUNT(*) FROM jobs GROUP BY state");
    if (!stmt.ok()) return stmt.status();
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      counts[static_cast<JobState>(stmt->Int(0))] = stmt->Int(1);
    }
  });
  if (!s.ok()) return s;
  return counts;
}

}  // namespace mq::server
