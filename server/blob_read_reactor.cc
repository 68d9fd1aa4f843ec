#include "blob_read_reactor.h"

#include "absl/strings/str_cat.h"
#include "grpc_status.h"

namespace mq::server {

namespace {
constexpr uint64_t kChunkBytes = 1 << 20;
}

BlobReadReactor::BlobReadReactor(ScopedFd fd, uint64_t offset, uint64_t size, ServerMetrics* metrics)
    : fd_(std::move(fd)), offset_(offset), size_(size), metrics_(metrics) {
  NextWrite();
}

void BlobReadReactor::NextWrite() {
  if (offset_ >= size_) {
    Finish(grpc::Status::OK);
    return;
  }
  size_t want = static_cast<size_t>(std::min(kChunkBytes, size_ - offset_));
  std::string* data = chunk_.mutable_data();
  data->resize(want);
  auto n = PreadFull(fd_.get(), data->data(), want, offset_);
  if (!n.ok()) {
    Finish(ToGrpcStatus(n.status()));
    return;
  }
  if (*n != want) {
    Finish(grpc::Status(grpc::StatusCode::DATA_LOSS, absl::StrCat("blob is shorter than recorded (", offset_ + *n, " < ", size_, ")")));
    return;
  }
  chunk_.set_offset(offset_);
  offset_ += want;
  if (metrics_ != nullptr) metrics_->AddDownloadedBytes(want);
  StartWrite(&chunk_);
}

void BlobReadReactor::OnWriteDone(bool ok) {
  if (!ok) {
    Finish(grpc::Status(grpc::StatusCode::CANCELLED, "stream closed by the client"));
    return;
  }
  NextWrite();
}

}  // namespace mq::server
