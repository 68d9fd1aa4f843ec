// Receives an UploadChunks (or UploadResultChunks) stream: each chunk is appended to its file as it
// arrives, then the next read starts, so memory is one chunk per stream.
#pragma once

#include <functional>
#include <map>
#include <string>

#include <grpcpp/support/server_callback.h>

#include "absl/status/status.h"
#include "mambaquant/v1/registry.pb.h"
#include "server_metrics.h"
#include "upload_manager.h"

namespace mq::server {

class UploadChunksReactor : public grpc::ServerReadReactor<mambaquant::v1::UploadChunk> {
 public:
  // `admit` decides whether this stream may write into an upload (public uploads vs job results).
  UploadChunksReactor(UploadManager* uploads, RegistryStore* store, ServerMetrics* metrics,
                      mambaquant::v1::UploadChunksResponse* response,
                      std::function<absl::Status(const UploadRecord&)> admit);
  void OnReadDone(bool ok) override;
  void OnDone() override { delete this; }

 private:
  void FinishWith(const absl::Status& status);

  UploadManager* uploads_;
  RegistryStore* store_;
  ServerMetrics* metrics_;
  mambaquant::v1::UploadChunksResponse* response_;
  std::function<absl::Status(const UploadRecord&)> admit_;
  mambaquant::v1::UploadChunk chunk_;
  std::map<std::string, UploadRecord> records_;  // uploads this stream wrote to
  std::map<std::string, mambaquant::v1::UploadFileState> touched_;  // "<upload>\n<path>" -> state
  uint64_t bytes_ = 0;
};

}  // namespace mq::server
