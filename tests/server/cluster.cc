#include "cluster.h"

#include <grpcpp/create_channel.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc_status.h"

namespace mq::test {

bool IsTerminalState(mambaquant::v1::JobState s) {
  return s == mambaquant::v1::JOB_STATE_SUCCEEDED || s == mambaquant::v1::JOB_STATE_FAILED ||
         s == mambaquant::v1::JOB_STATE_CANCELLED;
}

Cluster::Cluster(std::vector<std::string> server_flags) : server_flags_(std::move(server_flags)) {
  port_ = PickFreePort();
  address_ = absl::StrCat("127.0.0.1:", port_);
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 50);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 200);
  args.SetMaxSendMessageSize(8 << 20);
  channel_ = grpc::CreateCustomChannel(address_, grpc::InsecureChannelCredentials(), args);
  registry_ = mambaquant::v1::RegistryService::NewStub(channel_);
  jobs_ = mambaquant::v1::JobService::NewStub(channel_);
}

Cluster::~Cluster() {
  for (auto& w : workers_) w->Kill();
  if (server_) server_->Kill();
  if (::testing::Test::HasFailure()) {
    std::fprintf(stderr, "---- server log ----\n%s\n", ServerLog().c_str());
    for (size_t i = 0; i < workers_.size(); ++i) std::fprintf(stderr, "---- worker %zu log ----\n%s\n", i, WorkerLog(static_cast<int>(i)).c_str());
  }
}

void Cluster::StartServer() {
  if (server_) server_->Kill();
  std::vector<std::string> argv = {MQ_SERVER_BIN, "--listen", address_, "--data-dir", dir_.Sub("data"), "--insecure"};
  argv.insert(argv.end(), server_flags_.begin(), server_flags_.end());
  server_ = std::make_unique<ChildProcess>(argv, dir_.Sub("server.log"));
  ASSERT_TRUE(WaitForServing(address_, absl::Seconds(20))) << ServerLog();
}

void Cluster::KillServer() { server_->Kill(); }

int Cluster::StartWorker(const std::vector<std::string>& extra_flags) {
  int i = static_cast<int>(workers_.size());
  std::vector<std::string> argv = {MQ_WORKER_BIN, "--server", address_,
                                   "--listen", absl::StrCat("127.0.0.1:", PickFreePort()),
                                   "--backend", "cpu",
                                   "--cache-dir", dir_.Sub(absl::StrCat("worker", i)),
                                   "--insecure", "--poll-seconds", "2", "--name", absl::StrCat("worker", i)};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  workers_.push_back(std::make_unique<ChildProcess>(argv, dir_.Sub(absl::StrCat("worker", i, ".log"))));
  return i;
}

int Cluster::Mqctl(std::vector<std::string> args, std::string* out) {
  std::vector<std::string> argv = {MQCTL_BIN, "--server", address_, "--insecure"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommand(argv, out);
}

int Cluster::MqctlWithErrors(std::vector<std::string> args, std::string* out) {
  std::vector<std::string> argv = {MQCTL_BIN, "--server", address_, "--insecure"};
  argv.insert(argv.end(), args.begin(), args.end());
  return RunCommandWithStderr(std::move(argv), out);
}

void Cluster::UploadBundled() {
  ASSERT_EQ(Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", "mamba-tiny"}), 0);
  ASSERT_EQ(Mqctl({"datasets", "upload", SourceDir() + "/models/text/calib.txt", "--name", "calib"}), 0);
  ASSERT_EQ(Mqctl({"datasets", "upload", SourceDir() + "/models/text/eval.txt", "--name", "eval"}), 0);
}

absl::StatusOr<mambaquant::v1::Job> Cluster::GetJob(const std::string& id) {
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  mambaquant::v1::GetJobRequest req;
  req.set_job_id(id);
  mambaquant::v1::Job job;
  absl::Status s = FromGrpcStatus(jobs_->GetJob(&ctx, req, &job));
  if (!s.ok()) return s;
  return job;
}

mambaquant::v1::Job Cluster::WaitJob(const std::string& id, absl::Duration timeout,
                                     const std::function<bool(const mambaquant::v1::Job&)>& pred) {
  absl::Time deadline = absl::Now() + timeout;
  mambaquant::v1::Job last;
  while (absl::Now() < deadline) {
    auto job = GetJob(id);
    if (job.ok()) {
      last = *job;
      if (pred(last)) return last;
    }
    absl::SleepFor(absl::Milliseconds(50));
  }
  return last;
}

std::string Cluster::ServerLog() const {
  std::string out;
  RunCommand({"/bin/cat", dir_.Sub("server.log")}, &out);
  return out;
}

std::string Cluster::WorkerLog(int i) const {
  std::string out;
  RunCommand({"/bin/cat", dir_.Sub(absl::StrCat("worker", i, ".log"))}, &out);
  return out;
}

}  // namespace mq::test
