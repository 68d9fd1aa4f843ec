// Streams a blob file in chunks of at most 1 MiB (RegistryService.ReadFile, WorkerService.FetchBlob).
// One chunk is in flight at a time: the next read starts in OnWriteDone, so memory stays at one
// chunk per stream whatever the file size, and no reaction waits on anything but one pread.
#pragma once

#include <cstdint>

#include <grpcpp/support/server_callback.h>

#include "file_util.h"
#include "mambaquant/v1/registry.pb.h"
#include "server_metrics.h"

namespace mq::server {

class BlobReadReactor : public grpc::ServerWriteReactor<mambaquant::v1::FileChunk> {
 public:
  // Streams bytes [offset, size) of `fd`.
  BlobReadReactor(ScopedFd fd, uint64_t offset, uint64_t size, ServerMetrics* metrics);
  void OnWriteDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void NextWrite();

  ScopedFd fd_;
  uint64_t offset_;
  const uint64_t size_;
  ServerMetrics* metrics_;
  mambaquant::v1::FileChunk chunk_;
};

}  // namespace mq::server
