#include "upload_chunks_reactor.h"

#include "absl/time/clock.h"
#include "grpc_status.h"

namespace mq::server {

UploadChunksReactor::UploadChunksReactor(UploadManager* uploads, RegistryStore* store, ServerMetrics* metrics,
                                         mambaquant::v1::UploadChunksResponse* response,
                                         std::function<absl::Status(const UploadRecord&)> admit)
    : uploads_(uploads), store_(store), metrics_(metrics), response_(response), admit_(std::move(admit)) {
  StartRead(&chunk_);
}

void UploadChunksReactor::FinishWith(const absl::Status& status) {
  const absl::Time now = absl::Now();
  for (const auto& [id, record] : records_) (void)store_->TouchUpload(id, now);
  for (const auto& [key, state] : touched_) *response_->add_files() = state;
  response_->set_bytes_received(bytes_);
  Finish(ToGrpcStatus(status));
}

void UploadChunksReactor::OnReadDone(bool ok) {
  if (!ok) {  // the client finished sending (or went away; then nobody reads the status)
    FinishWith(absl::OkStatus());
    return;
  }
  auto it = records_.find(chunk_.upload_id());
  if (it == records_.end()) {
    auto record = uploads_->GetRecord(chunk_.upload_id());
    if (!record.ok()) {
      FinishWith(record.status());
      return;
    }
    absl::Status admitted = admit_(*record);
    if (!admitted.ok()) {
      FinishWith(admitted);
      return;
    }
    it = records_.emplace(chunk_.upload_id(), *std::move(record)).first;
  }
  auto state = uploads_->WriteChunk(it->second, chunk_);
  if (!state.ok()) {
    FinishWith(state.status());
    return;
  }
  bytes_ += chunk_.data().size();
  if (metrics_ != nullptr) metrics_->AddUploadedBytes(chunk_.data().size());
  touched_[chunk_.upload_id() + "\n" + chunk_.path()] = *std::move(state);
  StartRead(&chunk_);
}

}  // namespace mq::server
