// The SQLite store: schema migrations, the job state machine as persisted, requeueing.
#include "job_store.h"

#include <gtest/gtest.h>

#include "job_state.h"
#include "schema_migrations.h"
#include "test_support.h"
#include "worker_store.h"

namespace mq::server {
namespace {

using mambaquant::v1::Job;
using mambaquant::v1::JobState;

std::unique_ptr<SqliteDb> OpenMigrated(const std::string& path) {
  auto db = SqliteDb::Open(path);
  EXPECT_TRUE(db.ok()) << db.status();
  EXPECT_TRUE(MigrateSchema(**db).ok());
  return *std::move(db);
}

mambaquant::v1::QuantSpec Spec() {
  mambaquant::v1::QuantSpec spec;
  spec.set_model("m:1");
  spec.set_calib_dataset("c:1");
  spec.set_preset("rtn");
  spec.set_bits("w8a8");
  return spec;
}

const absl::Time kT0 = absl::FromUnixSeconds(1700000000);

TEST(SchemaMigrations, FreshDatabaseReachesLatestVersionAndReopenIsNoOp) {
  test::TempDir dir;
  {
    auto db = OpenMigrated(dir.Sub("mq.db"));
    EXPECT_EQ(*SchemaVersion(*db), SchemaMigrations().back().version);
  }
  auto db = OpenMigrated(dir.Sub("mq.db"));
  EXPECT_EQ(*SchemaVersion(*db), SchemaMigrations().back().version);
}

TEST(SchemaMigrations, AppliesOnlyNewerMigrationsInOrder) {
  test::TempDir dir;
  auto db = SqliteDb::Open(dir.Sub("t.db"));
  std::vector<Migration> v1 = {{1, "CREATE TABLE a (x INTEGER)"}};
  ASSERT_TRUE(MigrateSchema(**db, v1).ok());
  std::vector<Migration> v2 = {{1, "CREATE TABLE a (x INTEGER)"}, {2, "ALTER TABLE a ADD COLUMN y TEXT"}};
  ASSERT_TRUE(MigrateSchema(**db, v2).ok());  // migration 1 is not re-run (it would fail)
  EXPECT_EQ(*SchemaVersion(**db), 2);
}

TEST(SchemaMigrations, FailedMigrationRollsBackWithTheVersion) {
  test::TempDir dir;
  auto db = SqliteDb::Open(dir.Sub("t.db"));
  std::vector<Migration> bad = {{1, "CREATE TABLE a (x INTEGER)"}, {2, "CREATE TABLE b (y); SELECT * FROM nonexistent"}};
  EXPECT_FALSE(MigrateSchema(**db, bad).ok());
  EXPECT_EQ(*SchemaVersion(**db), 1);
  // Table b from the failed migration does not exist: version 2 can be applied cleanly later.
  std::vector<Migration> good = {{1, "CREATE TABLE a (x INTEGER)"}, {2, "CREATE TABLE b (y)"}};
  EXPECT_TRUE(MigrateSchema(**db, good).ok());
}

TEST(SchemaMigrations, RefusesDatabaseFromNewerBuild) {
  test::TempDir dir;
  auto db = SqliteDb::Open(dir.Sub("t.db"));
  std::vector<Migration> v2 = {{1, "CREATE TABLE a (x)"}, {2, "CREATE TABLE b (y)"}};
  ASSERT_TRUE(MigrateSchema(**db, v2).ok());
  std::vector<Migration> v1 = {{1, "CREATE TABLE a (x)"}};
  EXPECT_EQ(MigrateSchema(**db, v1).code(), absl::StatusCode::kFailedPrecondition);
}

TEST(JobStateMachine, AllowsOnlyDocumentedTransitions) {
  using S = JobState;
  EXPECT_TRUE(CheckTransition(S::JOB_STATE_QUEUED, S::JOB_STATE_ASSIGNED).ok());
  EXPECT_TRUE(CheckTransition(S::JOB_STATE_QUEUED, S::JOB_STATE_CANCELLED).ok());
  EXPECT_TRUE(CheckTransition(S::JOB_STATE_ASSIGNED, S::JOB_STATE_RUNNING).ok());
  EXPECT_TRUE(CheckTransition(S::JOB_STATE_RUNNING, S::JOB_STATE_QUEUED).ok());
  EXPECT_TRUE(CheckTransition(S::JOB_STATE_RUNNING, S::JOB_STATE_SUCCEEDED).ok());
  EXPECT_FALSE(CheckTransition(S::JOB_STATE_QUEUED, S::JOB_STATE_SUCCEEDED).ok());
  EXPECT_FALSE(CheckTransition(S::JOB_STATE_SUCCEEDED, S::JOB_STATE_QUEUED).ok());
  EXPECT_FALSE(CheckTransition(S::JOB_STATE_CANCELLED, S::JOB_STATE_RUNNING).ok());
  EXPECT_FALSE(CheckTransition(S::JOB_STATE_FAILED, S::JOB_STATE_FAILED).ok());
}

TEST(JobStore, LifecycleIsPersistedAcrossReopen) {
  test::TempDir dir;
  std::string id;
  {
    auto db = OpenMigrated(dir.Sub("mq.db"));
    JobStore jobs(db.get());
    auto job = jobs.Create(Spec(), "m", 0, kT0);
    ASSERT_TRUE(job.ok());
    id = job->id();
    EXPECT_EQ(job->state(), JobState::JOB_STATE_QUEUED);
    auto assigned = jobs.AssignNext("w-1", "cpu", kT0 + absl::Seconds(1));
    ASSERT_TRUE(assigned.ok() && assigned->has_value());
    EXPECT_EQ((*assigned)->state(), JobState::JOB_STATE_ASSIGNED);
    EXPECT_EQ((*assigned)->attempt(), 1);
    ProgressUpdate p;
    p.stage = mambaquant::v1::STAGE_CALIBRATE;
    p.stage_fraction = 0.5;
    p.fraction = 0.3;
    p.eta_seconds = 12;
    p.message = "calibrating";
    auto running = jobs.ReportProgress("w-1", id, p, kT0 + absl::Seconds(2));
    ASSERT_TRUE(running.ok());
    EXPECT_EQ(running->state(), JobState::JOB_STATE_RUNNING);
  }
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto job = jobs.Get(id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), JobState::JOB_STATE_RUNNING);
  EXPECT_EQ(job->stage(), mambaquant::v1::STAGE_CALIBRATE);
  EXPECT_DOUBLE_EQ(job->eta_seconds(), 12);
  EXPECT_EQ(job->worker_id(), "w-1");
}

TEST(JobStore, ProgressFromAnotherWorkerIsRefused) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto job = jobs.Create(Spec(), "m", 0, kT0);
  ASSERT_TRUE(jobs.AssignNext("w-1", "cpu", kT0).ok());
  auto other = jobs.ReportProgress("w-2", job->id(), ProgressUpdate{}, kT0);
  EXPECT_EQ(other.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(JobStore, CancelQueuedEndsAtOnceRunningOnlyFlags) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto a = jobs.Create(Spec(), "m", 0, kT0);
  auto b = jobs.Create(Spec(), "m", 0, kT0);
  ASSERT_TRUE(jobs.AssignNext("w-1", "cpu", kT0).ok());  // takes a (FIFO)
  auto cancelled_running = jobs.Cancel(a->id(), kT0);
  ASSERT_TRUE(cancelled_running.ok());
  EXPECT_EQ(cancelled_running->state(), JobState::JOB_STATE_ASSIGNED);
  EXPECT_TRUE(cancelled_running->cancel_requested());
  auto cancelled_queued = jobs.Cancel(b->id(), kT0);
  EXPECT_EQ(cancelled_queued->state(), JobState::JOB_STATE_CANCELLED);
  EXPECT_EQ(jobs.Cancel(b->id(), kT0).status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(jobs.Cancel("j-0000000000000000", kT0).status().code(), absl::StatusCode::kNotFound);
}

TEST(JobStore, ReleasedJobsAreRequeuedThenFailAfterMaxAttempts) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto job = jobs.Create(Spec(), "m", 0, kT0);
  for (int attempt = 1; attempt <= 2; ++attempt) {
    auto assigned = jobs.AssignNext("w-1", "cpu", kT0);
    ASSERT_TRUE(assigned.ok() && assigned->has_value());
    EXPECT_EQ((*assigned)->attempt(), attempt);
    auto released = jobs.ReleaseWorkerJobs("w-1", "worker lease expired", 3, kT0);
    ASSERT_TRUE(released.ok());
    ASSERT_EQ(released->size(), 1u);
    EXPECT_EQ((*released)[0].state(), JobState::JOB_STATE_QUEUED);
  }
  ASSERT_TRUE(jobs.AssignNext("w-1", "cpu", kT0).ok());
  auto released = jobs.ReleaseWorkerJobs("w-1", "worker lease expired", 3, kT0);
  ASSERT_EQ(released->size(), 1u);
  EXPECT_EQ((*released)[0].state(), JobState::JOB_STATE_FAILED);
  EXPECT_NE((*released)[0].error().find("3 attempts"), std::string::npos);
}

TEST(JobStore, ReleaseKeepsListedJobsAndRecentAssignmentsAndCancelsRequested) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto a = jobs.Create(Spec(), "m", 0, kT0);
  auto b = jobs.Create(Spec(), "m", 0, kT0);
  auto c = jobs.Create(Spec(), "m", 0, kT0);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(jobs.AssignNext("w-1", "cpu", kT0).ok());
  ASSERT_TRUE(jobs.Cancel(c->id(), kT0).ok());
  // a is reported running by the worker; b and c are not, and are old enough to be released.
  auto released = jobs.ReleaseWorkerJobs("w-1", "not running", 3, kT0 + absl::Seconds(30), {a->id()}, absl::Seconds(10));
  ASSERT_TRUE(released.ok());
  ASSERT_EQ(released->size(), 2u);
  EXPECT_EQ(jobs.Get(a->id())->state(), JobState::JOB_STATE_ASSIGNED);
  EXPECT_EQ(jobs.Get(b->id())->state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(jobs.Get(c->id())->state(), JobState::JOB_STATE_CANCELLED);
  // A fresh assignment is spared by the grace period.
  auto d = jobs.AssignNext("w-1", "cpu", kT0 + absl::Seconds(30));
  ASSERT_TRUE(d.ok() && d->has_value());
  released = jobs.ReleaseWorkerJobs("w-1", "not running", 3, kT0 + absl::Seconds(31), {a->id()}, absl::Seconds(10));
  EXPECT_TRUE(released->empty());
}

TEST(JobStore, BackendConstraintAndQueueLimit) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  auto spec = Spec();
  spec.set_backend("cuda");
  ASSERT_TRUE(jobs.Create(spec, "m", 0, kT0).ok());
  auto none = jobs.AssignNext("w-cpu", "cpu", kT0);
  ASSERT_TRUE(none.ok());
  EXPECT_FALSE(none->has_value());
  auto gpu = jobs.AssignNext("w-gpu", "cuda", kT0);
  EXPECT_TRUE(gpu->has_value());
  ASSERT_TRUE(jobs.Create(Spec(), "m", 1, kT0).ok());
  EXPECT_EQ(jobs.Create(Spec(), "m", 1, kT0).status().code(), absl::StatusCode::kResourceExhausted);
}

TEST(JobStore, ListFiltersAndPagesNewestFirst) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  JobStore jobs(db.get());
  std::vector<std::string> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(jobs.Create(Spec(), i % 2 ? "odd" : "even", 0, kT0)->id());
  JobListFilter f;
  f.page_size = 2;
  auto p1 = jobs.List(f);
  ASSERT_EQ(p1->jobs.size(), 2u);
  EXPECT_EQ(p1->jobs[0].id(), ids[4]);
  f.page_token = p1->next_page_token;
  auto p2 = jobs.List(f);
  EXPECT_EQ(p2->jobs[0].id(), ids[2]);
  JobListFilter odd;
  odd.model_name = "odd";
  EXPECT_EQ(jobs.List(odd)->jobs.size(), 2u);
  JobListFilter bad;
  bad.page_token = "x";
  EXPECT_EQ(jobs.List(bad).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(WorkerStore, LeasesExpireAndRenewAllGrantsGrace) {
  test::TempDir dir;
  auto db = OpenMigrated(dir.Sub("mq.db"));
  WorkerStore workers(db.get());
  mambaquant::v1::RegisterWorkerRequest info;
  info.set_backend("cpu");
  auto id = workers.Register(info, kT0, absl::Seconds(5));
  ASSERT_TRUE(id.ok());
  EXPECT_TRUE(workers.Expired(kT0 + absl::Seconds(4))->empty());
  EXPECT_EQ(workers.Expired(kT0 + absl::Seconds(6))->size(), 1u);
  ASSERT_TRUE(workers.RenewAll(kT0 + absl::Seconds(100), absl::Seconds(5)).ok());
  EXPECT_TRUE(workers.Expired(kT0 + absl::Seconds(104))->empty());
  EXPECT_EQ(workers.Renew("w-unknown", kT0, absl::Seconds(5)).code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace mq::server
