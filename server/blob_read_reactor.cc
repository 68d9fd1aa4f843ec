#include "blob_read_reactor.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "grpc_status.h"
#include "log.h"

namespace mq::server {

namespace {
constexpr uint64_t kChunkBytes = 1 << 20;
}

BlobReadReactor::BlobReadReactor(ScopedFd fd, uint64_t offset, uint64_t size, std::string sha256, ServerMetrics* metrics)
    : fd_(std::move(fd)), offset_(offset), size_(size), sha256_(std::move(sha256)), metrics_(metrics) {
  absl::Status s = HashPrefix();
  if (!s.ok()) {
    Finish(ToGrpcStatus(s));
    return;
  }
  NextWrite();
}

absl::Status BlobReadReactor::HashPrefix() {
  // A resumed download is rare; reading its prefix once here is the price of never sending the
  // end of a blob whose digest was not checked.
  std::string buf;
  for (uint64_t pos = 0; pos < offset_;) {
    size_t want = static_cast<size_t>(std::min(kChunkBytes, offset_ - pos));
    buf.resize(want);
    auto n = PreadFull(fd_.get(), buf.data(), want, pos);
    if (!n.ok()) return n.status();
    if (*n != want) return absl::DataLossError(absl::StrCat("blob is shorter than recorded (", pos + *n, " < ", size_, ")"));
    hash_.Update(buf.data(), want);
    pos += want;
  }
  return absl::OkStatus();
}

absl::Status BlobReadReactor::Verify() {
  verified_ = true;
  std::string digest = hash_.FinishHex();
  if (digest == sha256_) return absl::OkStatus();
  Log(LogLevel::kError, "blob corrupt on disk: digest mismatch, not served").Kv("blob", sha256_).Kv("digest", digest);
  return absl::DataLossError(absl::StrCat("blob ", sha256_, " is corrupt on the server's disk (its bytes hash to ", digest,
                                          "); not served"));
}

void BlobReadReactor::NextWrite() {
  if (offset_ >= size_) {
    Finish(verified_ ? grpc::Status::OK : ToGrpcStatus(Verify()));
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
  hash_.Update(data->data(), want);
  chunk_.set_offset(offset_);
  offset_ += want;
  if (offset_ == size_) {
    // The last chunk goes out only when the whole blob matches its digest.
    absl::Status s = Verify();
    if (!s.ok()) {
      Finish(ToGrpcStatus(s));
      return;
    }
  }
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
