#include "serve_stream_reactor.h"

#include "grpc_status.h"
#include "log.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

ServeStreamReactor::ServeStreamReactor(InferenceRouter* router, std::function<absl::Status(const std::string&)> check_worker)
    : router_(router), check_worker_(std::move(check_worker)) {
  StartRead(&in_);
}

bool ServeStreamReactor::Send(const ServeDown& message) {
  absl::MutexLock l(&mu_);
  if (closing_) return false;
  queue_.push_back(message);
  if (!writing_) {
    writing_ = true;
    StartWrite(&queue_.front());
  }
  return true;
}

void ServeStreamReactor::CloseStream() {
  absl::MutexLock l(&mu_);
  if (closing_) return;
  closing_ = true;
  final_ = grpc::Status::OK;
  MaybeFinish();  // now, or once the write in flight is done
}

void ServeStreamReactor::OnWriteDone(bool ok) {
  bool close = false;
  {
    absl::MutexLock l(&mu_);
    queue_.pop_front();
    writing_ = false;
    if (!ok) {
      close = true;
    } else if (!queue_.empty()) {
      writing_ = true;
      StartWrite(&queue_.front());
    } else {
      MaybeFinish();
    }
  }
  if (close) Close(grpc::Status(grpc::StatusCode::UNAVAILABLE, "write to the worker failed"));
}

void ServeStreamReactor::OnReadDone(bool ok) {
  if (!ok) {
    Close(grpc::Status::OK);
    return;
  }
  const std::string id = AttachedId();
  if (id.empty()) {
    if (!in_.has_hello()) {
      Close(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "the first message of Serve must be a hello"));
      return;
    }
    absl::Status s = check_worker_ ? check_worker_(in_.hello().worker_id()) : absl::OkStatus();
    if (s.ok()) s = router_->AttachWorker(in_.hello(), this);
    if (!s.ok()) {
      Close(ToGrpcStatus(s));
      return;
    }
    absl::MutexLock l(&mu_);
    worker_id_ = in_.hello().worker_id();
    attached_ = true;
  } else if (in_.has_event()) {
    router_->OnWorkerEvent(id, in_.event());
  } else if (in_.has_events()) {
    for (const auto& e : in_.events().events()) router_->OnWorkerEvent(id, e);
  } else if (in_.has_load()) {
    router_->OnWorkerLoad(id, in_.load());
  }
  StartRead(&in_);
}

void ServeStreamReactor::OnCancel() { Close(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled")); }

void ServeStreamReactor::Close(const grpc::Status& status) {
  {
    absl::MutexLock l(&mu_);
    if (closing_) return;
    closing_ = true;
    final_ = status;
  }
  // After this the router sends nothing more here; calls in flight on this worker fail.
  const std::string id = AttachedId();
  if (!id.empty()) router_->DetachWorker(id, this);
  absl::MutexLock l(&mu_);
  MaybeFinish();
}

void ServeStreamReactor::MaybeFinish() {
  if (!closing_ || writing_ || finished_) return;
  finished_ = true;
  Finish(final_);
}

std::string ServeStreamReactor::AttachedId() {
  absl::MutexLock l(&mu_);
  return attached_ ? worker_id_ : std::string();
}

void ServeStreamReactor::OnDone() {
  {
    absl::MutexLock l(&mu_);
    closing_ = true;
  }
  // OnDone without a Close (the call broke): the router must forget this sink before it is freed.
  const std::string id = AttachedId();
  if (!id.empty()) router_->DetachWorker(id, this);
  delete this;
}

}  // namespace mq::server
