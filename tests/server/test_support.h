// Helpers for the service tests: child processes that always die with the test, free ports,
// temporary directories, /proc memory readings, and gRPC waiting.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/channel.h>
#include <grpcpp/security/credentials.h>

#include "absl/time/time.h"

namespace mq::test {

// A directory removed (recursively) on destruction.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }
  std::string Sub(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// A child process with stdout+stderr appended to `log_path`. The destructor SIGKILLs it if still
// running; PR_SET_PDEATHSIG kills it if the test process dies first.
class ChildProcess {
 public:
  ChildProcess(const std::vector<std::string>& argv, const std::string& log_path,
               const std::map<std::string, std::string>& env = {});
  ~ChildProcess();
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;

  pid_t pid() const { return pid_; }
  bool running();
  void Signal(int sig);
  // Waits for exit up to `timeout`; returns the exit status (or -1 on timeout, 128+sig if killed).
  int Wait(absl::Duration timeout);
  void Kill();  // SIGKILL and reap

 private:
  pid_t pid_ = -1;
  bool reaped_ = false;
  int status_ = 0;
};

// Runs a command to completion (bounded by timeout); returns exit code, fills stdout.
int RunCommand(const std::vector<std::string>& argv, std::string* out, absl::Duration timeout = absl::Seconds(300),
               const std::map<std::string, std::string>& env = {});

// RunCommand with the command's stderr in `out` too (through sh, whose "$@" passes every
// argument's bytes unchanged).
int RunCommandWithStderr(std::vector<std::string> argv, std::string* out);

int PickFreePort();
// GET http://127.0.0.1:port/path (HTTP/1.0); retries until something answers or `timeout` passes.
// Returns the whole response (status line, headers, body), or "" when nothing answered.
std::string HttpGet(int port, const std::string& path, absl::Duration timeout);
// A /proc/<pid>/status value in KiB ("VmRSS", "VmHWM"); -1 when unavailable.
int64_t ProcStatusKb(pid_t pid, const std::string& key);
// Waits until the gRPC health service at `target` answers SERVING.
bool WaitForServing(const std::string& target, absl::Duration timeout,
                    std::shared_ptr<grpc::ChannelCredentials> creds = nullptr, const std::string& token = "");
// The gRPC health status (grpc.health.v1 ServingStatus: 1 SERVING, 2 NOT_SERVING) of `service` at
// `target` (plaintext); -1 when the call fails (NOT_FOUND for an unknown service included).
int HealthStatus(const std::string& target, const std::string& service);
std::string ReadFileOrDie(const std::string& path);
// Directory of the repository (for models/ and tests/data/).
std::string SourceDir();

}  // namespace mq::test
