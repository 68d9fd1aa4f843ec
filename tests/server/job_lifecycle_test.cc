// The job lifecycle through a real mq-server and an in-process worker agent whose engine is a
// fake: progress events, cancellation, failures, results. Independent of the numerical engine.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <grpcpp/create_channel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "blob_cache.h"
#include "cluster.h"
#include "fake_job_executor.h"
#include "grpc_status.h"
#include "job_runner.h"
#include "sha256.h"
#include "worker_agent.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

class JobLifecycleTest : public ::testing::Test {
 protected:
  void SetUp() override {
    cluster_.StartServer();
    cluster_.UploadBundled();
    server_.channel = grpc::CreateChannel(cluster_.address(), grpc::InsecureChannelCredentials());
    server_.stub = WorkerService::NewStub(server_.channel);
    OpenWorker("in-process");
  }
  // A worker (not started) with its cache and job directories under the cluster's: opened again
  // after a Shutdown, it is that worker restarted.
  void OpenWorker(const std::string& name) {
    agent_.reset();  // before the cache it points to
    cache_ = *worker::BlobCache::Open(cluster_.dir().Sub("cache"), 0);
    worker::WorkerOptions options;
    options.name = name;
    options.backend = "cpu";
    options.work_dir = cluster_.dir().Sub("jobs");
    options.poll_wait_seconds = 2;
    agent_ = std::make_unique<worker::WorkerAgent>(options, &server_, cache_.get(), &executor_, nullptr);
  }
  void TearDown() override { agent_->Shutdown(); }

  std::string Submit() {
    grpc::ClientContext ctx;
    SubmitJobRequest req;
    req.mutable_spec()->set_model("mamba-tiny");
    req.mutable_spec()->set_calib_dataset("calib");
    req.mutable_spec()->set_eval_dataset("eval");
    Job job;
    EXPECT_TRUE(cluster_.jobs().SubmitJob(&ctx, req, &job).ok());
    return job.id();
  }

  std::vector<Job> Watch(const std::string& id) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
    WatchJobRequest req;
    req.set_job_id(id);
    auto reader = cluster_.jobs().WatchJob(&ctx, req);
    std::vector<Job> events;
    JobEvent e;
    while (reader->Read(&e)) events.push_back(e.job());
    EXPECT_TRUE(reader->Finish().ok());
    return events;
  }

  Cluster cluster_;
  FakeJobExecutor executor_;
  worker::ServerConnection server_;
  std::unique_ptr<worker::BlobCache> cache_;
  std::unique_ptr<worker::WorkerAgent> agent_;
};

TEST_F(JobLifecycleTest, WatchStreamsStagesProgressAndEtaToSuccess) {
  std::string id = Submit();
  agent_->Start();
  std::vector<Job> events = Watch(id);
  ASSERT_FALSE(events.empty());
  const Job& last = events.back();
  EXPECT_EQ(last.state(), JOB_STATE_SUCCEEDED) << last.error();
  EXPECT_EQ(last.result_model(), "mamba-tiny-mambaquant-w8a8:1");
  std::set<Stage> stages;
  bool eta_known = false;
  double previous_fraction = 0;
  for (const Job& j : events) {
    stages.insert(j.stage());
    eta_known |= j.state() == JOB_STATE_RUNNING && j.eta_seconds() >= 0;
    EXPECT_GE(j.fraction() + 1e-9, previous_fraction);  // whole-job progress never goes back
    previous_fraction = j.fraction();
  }
  EXPECT_TRUE(stages.count(STAGE_FETCH) || stages.count(STAGE_LOAD));
  EXPECT_TRUE(stages.count(STAGE_CALIBRATE));
  EXPECT_TRUE(eta_known);
  // The result is a registered model with the executor's report.
  grpc::ClientContext ctx;
  GetArtifactRequest req;
  req.set_kind(ARTIFACT_KIND_MODEL);
  req.set_ref(last.result_model());
  Artifact a;
  ASSERT_TRUE(cluster_.registry().GetArtifact(&ctx, req, &a).ok());
  EXPECT_EQ(nlohmann::json::parse(a.quantization().report_json())["fake"], true);
  EXPECT_EQ(a.quantization().job_id(), id);
}

TEST_F(JobLifecycleTest, CancelStopsRunningJobPromptly) {
  executor_.run_until_cancelled = true;
  std::string id = Submit();
  agent_->Start();
  Job running = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return j.stage() == STAGE_CALIBRATE; });
  ASSERT_EQ(running.state(), JOB_STATE_RUNNING);
  grpc::ClientContext ctx;
  CancelJobRequest req;
  req.set_job_id(id);
  Job after;
  ASSERT_TRUE(cluster_.jobs().CancelJob(&ctx, req, &after).ok());
  EXPECT_TRUE(after.cancel_requested());
  const absl::Time t0 = absl::Now();
  Job done = cluster_.WaitJob(id, absl::Seconds(10), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_CANCELLED);
  EXPECT_LT(absl::Now() - t0, absl::Seconds(3));
  EXPECT_TRUE(executor_.saw_cancel.load());
}

TEST_F(JobLifecycleTest, EngineFailureEndsJobFailedWithReason) {
  executor_.fail_with = "calibration text has no documents";
  std::string id = Submit();
  agent_->Start();
  Job done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_FAILED);
  EXPECT_NE(done.error().find("calibration text has no documents"), std::string::npos) << done.error();
  EXPECT_EQ(executor_.executions.load(), 1);  // failures are not retried
}

TEST_F(JobLifecycleTest, WorkerShutdownRequeuesItsJobAtOnce) {
  executor_.run_until_cancelled = true;
  std::string id = Submit();
  agent_->Start();
  Job running = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return j.stage() == STAGE_CALIBRATE; });
  ASSERT_EQ(running.state(), JOB_STATE_RUNNING);
  agent_->Shutdown();  // deregisters: no lease timeout needed
  Job requeued = cluster_.WaitJob(id, absl::Seconds(5), [](const Job& j) { return j.state() == JOB_STATE_QUEUED; });
  EXPECT_EQ(requeued.state(), JOB_STATE_QUEUED);
  EXPECT_EQ(requeued.attempt(), 1);
}

TEST_F(JobLifecycleTest, CachedBlobsAreFetchedOnce) {
  agent_->Start();
  for (int i = 0; i < 2; ++i) {
    std::string id = Submit();
    Job done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
    ASSERT_EQ(done.state(), JOB_STATE_SUCCEEDED);
  }
  EXPECT_EQ(cache_->misses(), 7u);  // 5 model files + calib + eval, the first time only
  EXPECT_EQ(cache_->hits(), 7u);
}

// The worker's paths in a job's error (as an engine error names them) are shown as what a user can
// act on: the dataset's reference, <output>. Operators read errors; the worker's layout is not theirs.
TEST_F(JobLifecycleTest, AJobErrorShowsNoWorkerPath) {
  executor_.fail_with = "cannot read {calib} nor write {output}/model.safetensors";
  std::string id = Submit();
  agent_->Start();
  Job done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_FAILED);
  EXPECT_NE(done.error().find("cannot read calib:1 nor write <output>/model.safetensors"), std::string::npos) << done.error();
  EXPECT_EQ(done.error().find(cluster_.dir().path()), std::string::npos) << done.error();
}

// A worker whose job directory cannot be written would fail every job it took (the whole queue):
// it takes none until it can, and then runs them.
TEST_F(JobLifecycleTest, AWorkerThatCannotWriteItsDirectoriesTakesNoJobUntilItCan) {
  const std::string work = cluster_.dir().Sub("jobs");
  std::filesystem::remove_all(work);
  { std::ofstream(work) << "not a directory"; }  // unwritable even for root
  agent_->Start();
  std::string id = Submit();
  absl::SleepFor(absl::Seconds(4));  // two polls' worth: it would have taken and failed the job
  auto job = cluster_.GetJob(id);
  ASSERT_TRUE(job.ok());
  EXPECT_EQ(job->state(), JOB_STATE_QUEUED) << job->DebugString();
  EXPECT_EQ(executor_.executions.load(), 0);
  std::filesystem::remove(work);
  Job done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_SUCCEEDED) << done.DebugString();
  EXPECT_EQ(done.attempt(), 1);
}

// A result the registry refuses (here: the export fails the commit's model check) fails the job
// with the reason; the worker retried FinishJob for 30 minutes with the job RUNNING.
TEST_F(JobLifecycleTest, AResultTheRegistryRefusesFailsTheJob) {
  executor_.result_fails_model_check = true;
  std::string id = Submit();
  agent_->Start();
  Job done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_FAILED) << done.DebugString();
  EXPECT_NE(done.error().find("the result could not be registered: INVALID_ARGUMENT"), std::string::npos) << done.error();
  EXPECT_TRUE(done.result_model().empty());
  // The worker is free for the next job.
  executor_.result_fails_model_check = false;
  id = Submit();
  done = cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_SUCCEEDED) << done.DebugString();
}

// The race the probe above leaves (the directories break between the poll and the job's start):
// the job is handed back, not failed, so another worker can run it.
TEST_F(JobLifecycleTest, AJobThatCannotStartForTheWorkersStorageIsHandedBackNotFailed) {
  const std::string id = Submit();
  RegisterWorkerRequest reg;
  reg.set_name("by-hand");
  reg.set_backend("cpu");
  RegisterWorkerResponse registered;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.stub->RegisterWorker(&ctx, reg, &registered).ok());
  }
  AcquireJobRequest acquire;
  acquire.set_worker_id(registered.worker_id());
  acquire.set_wait_seconds(5);
  AcquireJobResponse got;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(server_.stub->AcquireJob(&ctx, acquire, &got).ok());
  }
  ASSERT_EQ(got.assignment().job_id(), id);
  const std::string work = cluster_.dir().Sub("broken-jobs");
  { std::ofstream(work) << "not a directory"; }
  worker::JobRunner runner(&server_, cache_.get(), &executor_, nullptr, registered.worker_id(), work, got.assignment());
  runner.Run();
  EXPECT_TRUE(runner.handed_back());
  EXPECT_EQ(executor_.executions.load(), 0);
  auto job = cluster_.GetJob(id);
  ASSERT_TRUE(job.ok());
  EXPECT_FALSE(IsTerminalState(job->state())) << job->DebugString();  // not FAILED: the server requeues it
}

// A cached file of the right size but other bytes (a disk error, a hand edit) was served and
// quantized as is: its digest is now checked on its first use by a process, and it is fetched again.
TEST_F(JobLifecycleTest, ACorruptCachedFileIsFetchedAgainAfterARestart) {
  agent_->Start();
  std::string id = Submit();
  ASSERT_EQ(cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); }).state(),
            JOB_STATE_SUCCEEDED);
  // The calibration text: overwrite bytes in the middle, keeping the size.
  GetArtifactRequest get;
  get.set_kind(ARTIFACT_KIND_DATASET);
  get.set_ref("calib");
  Artifact artifact;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(cluster_.registry().GetArtifact(&ctx, get, &artifact).ok());
  }
  ASSERT_EQ(artifact.files_size(), 1);
  const std::string digest = artifact.files(0).sha256();
  const std::string path = cache_->PathFor(digest);
  {
    std::fstream f(path, std::ios::in | std::ios::out | std::ios::binary);
    ASSERT_TRUE(f.good()) << path;
    f.seekp(100);
    f.write("CORRUPTED", 9);
  }
  ASSERT_NE(*Sha256File(path), digest);
  // The worker restarts on the same cache directory.
  agent_->Shutdown();
  OpenWorker("restarted");
  agent_->Start();
  id = Submit();
  ASSERT_EQ(cluster_.WaitJob(id, absl::Seconds(30), [](const Job& j) { return IsTerminalState(j.state()); }).state(),
            JOB_STATE_SUCCEEDED);
  EXPECT_EQ(cache_->corrupt(), 1u);
  EXPECT_EQ(cache_->misses(), 1u);  // the corrupt file only
  EXPECT_EQ(cache_->hits(), 6u);
  EXPECT_EQ(*Sha256File(path), digest);
}

}  // namespace
}  // namespace mq::test
