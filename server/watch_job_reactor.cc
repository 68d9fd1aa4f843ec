#include "watch_job_reactor.h"

#include "grpc_status.h"
#include "job_state.h"
#include "proto_time.h"

namespace mq::server {

using mambaquant::v1::Job;

void WatchJobReactor::Sink::OnJob(const Job& job) {
  absl::MutexLock lock(&mu_);
  if (reactor_ != nullptr) reactor_->Offer(job);
}

void WatchJobReactor::Sink::OnShutdown() {
  absl::MutexLock lock(&mu_);
  if (reactor_ != nullptr) reactor_->Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down; watch again"));
}

void WatchJobReactor::Sink::Detach() {
  absl::MutexLock lock(&mu_);
  reactor_ = nullptr;
}

WatchJobReactor::WatchJobReactor(JobEventHub* hub, ServerMetrics* metrics)
    : hub_(hub), metrics_(metrics), sink_(std::make_shared<Sink>(this)) {
  if (metrics_ != nullptr) metrics_->WatchStreamOpened();
}

WatchJobReactor* WatchJobReactor::Start(JobEventHub* hub, ServerMetrics* metrics, const std::string& job_id,
                                        const std::function<absl::StatusOr<Job>()>& read_current) {
  auto* reactor = new WatchJobReactor(hub, metrics);
  reactor->token_ = hub->Subscribe(job_id, reactor->sink_);
  auto current = read_current();
  if (!current.ok()) {
    reactor->Close(ToGrpcStatus(current.status()));
  } else {
    reactor->Offer(*current);
  }
  return reactor;
}

void WatchJobReactor::Offer(const Job& job) {
  absl::MutexLock lock(&mu_);
  if (finished_ || wrote_terminal_) return;
  // Publishers race; a snapshot older than one already taken carries nothing new.
  absl::Time t = FromTimestamp(job.update_time());
  if (t < newest_) return;
  newest_ = t;
  pending_ = job;
  if (!writing_) WriteNextLocked();
}

void WatchJobReactor::WriteNextLocked() {
  *out_.mutable_job() = std::move(*pending_);
  pending_.reset();
  wrote_terminal_ = IsTerminal(out_.job().state());
  writing_ = true;
  StartWrite(&out_);
}

void WatchJobReactor::FinishLocked(const grpc::Status& status) {
  if (finished_) return;
  finished_ = true;
  Finish(status);
}

void WatchJobReactor::Close(const grpc::Status& status) {
  absl::MutexLock lock(&mu_);
  FinishLocked(status);
}

void WatchJobReactor::OnWriteDone(bool ok) {
  absl::MutexLock lock(&mu_);
  writing_ = false;
  if (!ok) {
    FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed"));
  } else if (wrote_terminal_) {
    FinishLocked(grpc::Status::OK);
  } else if (pending_.has_value() && !finished_) {
    WriteNextLocked();
  }
}

void WatchJobReactor::OnCancel() {
  absl::MutexLock lock(&mu_);
  FinishLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
}

void WatchJobReactor::OnDone() {
  hub_->Unsubscribe(token_);
  sink_->Detach();
  if (metrics_ != nullptr) metrics_->WatchStreamClosed();
  delete this;
}

}  // namespace mq::server
