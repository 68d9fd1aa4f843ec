// A WatchJob stream. Snapshots arrive from the JobEventHub on any thread; the reactor keeps only
// the newest one not yet written (so a slow reader costs one Job of memory, not a backlog) and
// writes one at a time, starting the next write from OnWriteDone. It finishes after writing a
// terminal state, when the client cancels, or when the server drains.
#pragma once

#include <memory>
#include <optional>

#include <grpcpp/support/server_callback.h>

#include <functional>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "job_event_hub.h"
#include "mambaquant/v1/jobs.pb.h"
#include "server_metrics.h"

namespace mq::server {

class WatchJobReactor : public grpc::ServerWriteReactor<mambaquant::v1::JobEvent> {
 public:
  // Subscribes to `job_id` and then writes `current` (read after subscribing, so no change falls
  // in between).
  static WatchJobReactor* Start(JobEventHub* hub, ServerMetrics* metrics, const std::string& job_id,
                                const std::function<absl::StatusOr<mambaquant::v1::Job>()>& read_current);

  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Forwards hub events to the reactor while it exists. The hub holds it by shared_ptr, so it may
  // outlive the reactor; `reactor` is cleared in OnDone.
  class Sink : public JobEventHub::Subscriber {
   public:
    explicit Sink(WatchJobReactor* r) : reactor_(r) {}
    void OnJob(const mambaquant::v1::Job& job) override;
    void OnShutdown() override;
    void Detach();

   private:
    absl::Mutex mu_;
    WatchJobReactor* reactor_ ABSL_GUARDED_BY(mu_);
  };

  WatchJobReactor(JobEventHub* hub, ServerMetrics* metrics);
  void Offer(const mambaquant::v1::Job& job);
  void Close(const grpc::Status& status);
  void WriteNextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void FinishLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  JobEventHub* hub_;
  ServerMetrics* metrics_;
  std::shared_ptr<Sink> sink_;
  uint64_t token_ = 0;

  absl::Mutex mu_;
  std::optional<mambaquant::v1::Job> pending_ ABSL_GUARDED_BY(mu_);
  absl::Time newest_ ABSL_GUARDED_BY(mu_) = absl::InfinitePast();  // update_time of the newest snapshot taken
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool wrote_terminal_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  mambaquant::v1::JobEvent out_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
