// The scheduler on a real store with a fake clock; Tick() is driven by the test.
#include "scheduler.h"

#include <gtest/gtest.h>

#include "proto_time.h"
#include "schema_migrations.h"
#include "test_support.h"

namespace mq::server {
namespace {

using mambaquant::v1::Job;
using mambaquant::v1::JobAssignment;
using mambaquant::v1::JobState;

class SchedulerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    db_ = *SqliteDb::Open(dir_.Sub("mq.db"));
    ASSERT_TRUE(MigrateSchema(*db_).ok());
    blobs_ = *BlobStore::Open(dir_.Sub("blobs"));
    jobs_ = std::make_unique<JobStore>(db_.get());
    workers_ = std::make_unique<WorkerStore>(db_.get());
    registry_store_ = std::make_unique<RegistryStore>(db_.get());
    uploads_ = std::make_unique<UploadManager>(registry_store_.get(), blobs_.get(), UploadLimits{});
    registry_ = std::make_unique<Registry>(registry_store_.get(), blobs_.get(), uploads_.get(), nullptr);
    SchedulerOptions options;
    options.lease = absl::Seconds(10);
    options.max_attempts = 3;
    scheduler_ = std::make_unique<Scheduler>(jobs_.get(), workers_.get(), registry_.get(), uploads_.get(), &hub_,
                                             nullptr, options, [this] { return now_; });
    AddArtifact(mambaquant::v1::ARTIFACT_KIND_MODEL, "m", "model.safetensors");
    AddArtifact(mambaquant::v1::ARTIFACT_KIND_DATASET, "c", "calib.txt");
  }

  void AddArtifact(mambaquant::v1::ArtifactKind kind, const std::string& name, const std::string& path) {
    mambaquant::v1::Artifact a;
    a.set_kind(kind);
    a.set_name(name);
    auto* f = a.add_files();
    f->set_path(path);
    f->set_size(3);
    f->set_sha256(std::string(64, 'a'));
    ASSERT_TRUE(db_->Transaction([&](SqliteTx& tx) { return registry_store_->InsertTx(tx, a).status(); }).ok());
  }

  std::string AddWorker(int max_jobs, const std::string& backend = "cpu") {
    mambaquant::v1::RegisterWorkerRequest info;
    info.set_backend(backend);
    info.set_max_concurrent_jobs(max_jobs);
    return *workers_->Register(info, now_, absl::Seconds(10));
  }

  Job Submit() {
    mambaquant::v1::QuantSpec spec;
    spec.set_model("m:1");
    spec.set_calib_dataset("c:1");
    return *jobs_->Create(spec, "m", 0, now_);
  }

  // Parks a poll and returns where its answer lands.
  std::shared_ptr<std::optional<std::optional<JobAssignment>>> Poll(const std::string& worker, absl::Duration wait) {
    auto answer = std::make_shared<std::optional<std::optional<JobAssignment>>>();
    scheduler_->AddWaiter(scheduler_->NewWaiterId(), worker, now_ + wait,
                          [answer](std::optional<JobAssignment> a) { *answer = std::move(a); });
    return answer;
  }

  test::TempDir dir_;
  absl::Time now_ = absl::FromUnixSeconds(1700000000);
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<JobStore> jobs_;
  std::unique_ptr<WorkerStore> workers_;
  std::unique_ptr<RegistryStore> registry_store_;
  std::unique_ptr<UploadManager> uploads_;
  std::unique_ptr<Registry> registry_;
  JobEventHub hub_;
  std::unique_ptr<Scheduler> scheduler_;
};

TEST_F(SchedulerTest, AssignsOldestQueuedJobWithItsResolvedFiles) {
  std::string w = AddWorker(2);
  Job first = Submit();
  Submit();
  auto answer = Poll(w, absl::Seconds(20));
  scheduler_->Tick();
  ASSERT_TRUE(answer->has_value());
  ASSERT_TRUE((*answer)->has_value());
  const JobAssignment& a = ***answer;
  EXPECT_EQ(a.job_id(), first.id());
  EXPECT_EQ(a.attempt(), 1);
  ASSERT_EQ(a.model_files_size(), 1);
  EXPECT_EQ(a.model_files(0).path(), "model.safetensors");
  EXPECT_EQ(a.calib_file().path(), "calib.txt");
  auto stored = jobs_->Get(first.id());
  EXPECT_EQ(stored->state(), JobState::JOB_STATE_ASSIGNED);
  EXPECT_EQ(stored->worker_id(), w);
}

TEST_F(SchedulerTest, WaiterWithoutWorkGetsNothingAtItsDeadline) {
  std::string w = AddWorker(1);
  auto answer = Poll(w, absl::Seconds(5));
  scheduler_->Tick();
  EXPECT_FALSE(answer->has_value());  // still waiting
  now_ += absl::Seconds(6);
  ASSERT_TRUE(workers_->Renew(w, now_, absl::Seconds(10)).ok());
  scheduler_->Tick();
  ASSERT_TRUE(answer->has_value());
  EXPECT_FALSE((*answer)->has_value());
}

TEST_F(SchedulerTest, FullWorkerGetsNoSecondJob) {
  std::string w = AddWorker(1);
  Submit();
  Submit();
  auto first = Poll(w, absl::Seconds(20));
  scheduler_->Tick();
  ASSERT_TRUE(first->has_value() && (*first)->has_value());
  auto second = Poll(w, absl::Seconds(20));
  scheduler_->Tick();
  EXPECT_FALSE(second->has_value());
  EXPECT_EQ(scheduler_->waiter_count(), 1u);
}

TEST_F(SchedulerTest, BackendMismatchLeavesJobQueued) {
  std::string cpu = AddWorker(1, "cpu");
  mambaquant::v1::QuantSpec spec;
  spec.set_model("m:1");
  spec.set_calib_dataset("c:1");
  spec.set_backend("cuda");
  Job job = *jobs_->Create(spec, "m", 0, now_);
  auto answer = Poll(cpu, absl::Seconds(20));
  scheduler_->Tick();
  EXPECT_FALSE(answer->has_value());
  EXPECT_EQ(jobs_->Get(job.id())->state(), JobState::JOB_STATE_QUEUED);
}

TEST_F(SchedulerTest, ExpiredLeaseRequeuesJobForAnotherWorker) {
  std::string dead = AddWorker(1);
  Job job = Submit();
  auto answer = Poll(dead, absl::Seconds(20));
  scheduler_->Tick();
  ASSERT_TRUE(answer->has_value() && (*answer)->has_value());
  now_ += absl::Seconds(11);  // dead never heartbeats
  std::string alive = AddWorker(1);
  scheduler_->Tick();
  EXPECT_EQ(jobs_->Get(job.id())->state(), JobState::JOB_STATE_QUEUED);
  EXPECT_EQ(workers_->Get(dead).status().code(), absl::StatusCode::kNotFound);
  auto second = Poll(alive, absl::Seconds(20));
  scheduler_->Tick();
  ASSERT_TRUE(second->has_value() && (*second)->has_value());
  EXPECT_EQ((*second)->value().job_id(), job.id());
  EXPECT_EQ((*second)->value().attempt(), 2);
}

TEST_F(SchedulerTest, StopAnswersEveryWaiterAndRefusesNewOnes) {
  std::string w = AddWorker(1);
  auto a = Poll(w, absl::Seconds(20));
  scheduler_->Stop();
  ASSERT_TRUE(a->has_value());
  EXPECT_FALSE((*a)->has_value());
  auto b = Poll(w, absl::Seconds(20));
  ASSERT_TRUE(b->has_value());
}

}  // namespace
}  // namespace mq::server
