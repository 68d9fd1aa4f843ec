// Ctrl-C (SIGINT) and SIGTERM for a long call: the first signal runs a callback on a watcher thread
// (typically grpc::ClientContext::TryCancel, which is thread-safe), so the call ends with CANCELLED
// and the command can clean up and report; a second signal terminates the process as usual.
// One watcher at a time per process.
#pragma once

#include <atomic>
#include <functional>
#include <thread>

namespace mq::cli {

class InterruptWatcher {
 public:
  explicit InterruptWatcher(std::function<void()> on_interrupt);
  ~InterruptWatcher();  // restores the previous signal dispositions
  InterruptWatcher(const InterruptWatcher&) = delete;
  InterruptWatcher& operator=(const InterruptWatcher&) = delete;

  bool interrupted() const { return interrupted_.load(); }

 private:
  std::function<void()> on_interrupt_;
  std::atomic<bool> interrupted_{false};
  int pipe_[2] = {-1, -1};
  bool installed_ = false;
  std::thread thread_;
};

// Conventional exit status of a command stopped by Ctrl-C (128 + SIGINT).
inline constexpr int kExitInterrupted = 130;

}  // namespace mq::cli
