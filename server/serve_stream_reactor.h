// The server's end of one worker's WorkerService.Serve stream: reads the worker's hello, events
// and load reports into the InferenceRouter, and writes the router's messages down, one write in
// flight at a time (a reaction never blocks). The router holds this object as a WorkerStreamSink
// from the hello until DetachWorker; it is deleted in OnDone, after both.
#pragma once

#include <deque>
#include <functional>
#include <string>

#include <grpcpp/support/server_callback.h>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "inference_router.h"
#include "mambaquant/v1/worker.pb.h"

namespace mq::server {

class ServeStreamReactor final : public grpc::ServerBidiReactor<mambaquant::v1::ServeUp, mambaquant::v1::ServeDown>,
                                 public WorkerStreamSink {
 public:
  // check_worker (may be empty) vets the hello's worker id against the caller's identity
  // (WorkerOwnership); a refusal ends the stream with its status.
  explicit ServeStreamReactor(InferenceRouter* router,
                              std::function<absl::Status(const std::string&)> check_worker = nullptr);

  bool Send(const mambaquant::v1::ServeDown& message) override;
  void CloseStream() override;

  void OnReadDone(bool ok) override;
  void OnWriteDone(bool ok) override;
  void OnCancel() override;
  void OnDone() override;

 private:
  // Stops reading, leaves the router and finishes once no write is in flight.
  void Close(const grpc::Status& status);
  void MaybeFinish() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // The worker id once attached, else empty.
  std::string AttachedId();

  InferenceRouter* router_;
  const std::function<absl::Status(const std::string&)> check_worker_;
  mambaquant::v1::ServeUp in_;
  absl::Mutex mu_;
  std::string worker_id_ ABSL_GUARDED_BY(mu_);  // set by the hello
  bool attached_ ABSL_GUARDED_BY(mu_) = false;
  std::deque<mambaquant::v1::ServeDown> queue_ ABSL_GUARDED_BY(mu_);
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool closing_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status final_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
