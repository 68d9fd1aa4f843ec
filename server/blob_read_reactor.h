// Streams a blob file in chunks of at most 1 MiB (RegistryService.ReadFile, WorkerService.FetchBlob).
// One chunk is in flight at a time: the next read starts in OnWriteDone, so memory stays at one
// chunk per stream whatever the file size, and no reaction waits on anything but one pread.
//
// The bytes are hashed as they are read and the digest checked before the last chunk is sent: a
// blob changed on disk (bit rot, a stray write) ends the stream with DATA_LOSS, and the chunk that
// would complete it is never sent, so no client ever receives the whole of a corrupt blob.
#pragma once

#include <cstdint>
#include <string>

#include <grpcpp/support/server_callback.h>

#include "file_util.h"
#include "mambaquant/v1/registry.pb.h"
#include "server_metrics.h"
#include "sha256.h"

namespace mq::server {

class BlobReadReactor : public grpc::ServerWriteReactor<mambaquant::v1::FileChunk> {
 public:
  // Streams bytes [offset, size) of `fd`, whose whole content must hash to `sha256`.
  BlobReadReactor(ScopedFd fd, uint64_t offset, uint64_t size, std::string sha256, ServerMetrics* metrics);
  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void NextWrite();
  // Hashes bytes [0, offset_) that a resumed read skips (so the digest still covers the blob).
  absl::Status HashPrefix();
  // OK when the bytes hashed so far (all of the blob) match sha256_; DATA_LOSS otherwise.
  absl::Status Verify();

  ScopedFd fd_;
  uint64_t offset_;
  const uint64_t size_;
  const std::string sha256_;
  ServerMetrics* metrics_;
  Sha256 hash_;
  bool verified_ = false;
  mambaquant::v1::FileChunk chunk_;
};

}  // namespace mq::server
