// A server (and workers) started from the built binaries on loopback, for integration tests.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "mambaquant/v1/jobs.grpc.pb.h"
#include "mambaquant/v1/registry.grpc.pb.h"
#include "test_support.h"

namespace mq::test {

class Cluster {
 public:
  explicit Cluster(std::vector<std::string> server_flags = {"--lease-seconds", "2"});
  ~Cluster();

  // Starts (or restarts, same port and data) the server and waits until it serves.
  void StartServer();
  void KillServer();  // SIGKILL
  // Starts a CPU worker process (with extra flags, e.g. serving limits); returns its index.
  int StartWorker(const std::vector<std::string>& extra_flags = {});
  ChildProcess& worker(int i) { return *workers_[static_cast<size_t>(i)]; }
  ChildProcess& server() { return *server_; }

  const std::string& address() const { return address_; }
  const TempDir& dir() const { return dir_; }
  mambaquant::v1::RegistryService::Stub& registry() { return *registry_; }
  mambaquant::v1::JobService::Stub& jobs() { return *jobs_; }

  // Runs mqctl against this server (--insecure); returns its exit code and stdout.
  int Mqctl(std::vector<std::string> args, std::string* out = nullptr);
  // The same with stderr (where mqctl writes errors) in `out` too.
  int MqctlWithErrors(std::vector<std::string> args, std::string* out);
  // Uploads models/mamba-tiny as "mamba-tiny" and the bundled texts as "calib" and "eval".
  void UploadBundled();

  absl::StatusOr<mambaquant::v1::Job> GetJob(const std::string& id);
  // Polls until `pred` holds for the job or `timeout` passes; returns the last job seen.
  mambaquant::v1::Job WaitJob(const std::string& id, absl::Duration timeout,
                              const std::function<bool(const mambaquant::v1::Job&)>& pred);
  std::string ServerLog() const;
  std::string WorkerLog(int i) const;

 private:
  TempDir dir_;
  std::vector<std::string> server_flags_;
  int port_;
  std::string address_;
  std::unique_ptr<ChildProcess> server_;
  std::vector<std::unique_ptr<ChildProcess>> workers_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<mambaquant::v1::RegistryService::Stub> registry_;
  std::unique_ptr<mambaquant::v1::JobService::Stub> jobs_;
};

bool IsTerminalState(mambaquant::v1::JobState s);

}  // namespace mq::test
