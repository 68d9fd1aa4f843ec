// Resumable uploads: the declared files of each upload, the bytes received so far, and their
// completion into the blob store. Upload records are in SQLite and partial bytes on disk, so an
// upload survives a server restart and resumes where it stopped.
#pragma once

#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "artifact_validation.h"
#include "blob_store.h"
#include "mambaquant/v1/registry.pb.h"
#include "registry_store.h"

namespace mq::server {

class UploadManager {
 public:
  UploadManager(RegistryStore* store, BlobStore* blobs, UploadLimits limits)
      : store_(store), blobs_(blobs), limits_(limits) {}

  // Validates the manifest, persists the upload and returns its state (files whose blob already
  // exists are complete). `job_id` marks result uploads of a job.
  absl::StatusOr<mambaquant::v1::Upload> Create(const mambaquant::v1::CreateUploadRequest& request,
                                                const std::string& job_id, absl::Time now);
  absl::StatusOr<mambaquant::v1::Upload> Get(const std::string& upload_id);
  absl::StatusOr<UploadRecord> GetRecord(const std::string& upload_id) { return store_->GetUpload(upload_id); }

  // Appends one chunk. When it completes its file, the digest is checked and the blob installed.
  // Never waits: a file another stream is writing right now answers ABORTED.
  absl::StatusOr<mambaquant::v1::UploadFileState> WriteChunk(const UploadRecord& record,
                                                             const mambaquant::v1::UploadChunk& chunk);

  // Forgets in-memory state and partial bytes of an upload (after commit or abort).
  void Release(const UploadRecord& record);
  // Drops the upload record and its partial bytes.
  absl::Status Abort(const std::string& upload_id);
  // Aborts uploads untouched for `ttl`.
  void CollectStale(absl::Time now, absl::Duration ttl);

  const UploadLimits& limits() const { return limits_; }

 private:
  struct OpenFile {
    absl::Mutex mu;
    std::unique_ptr<PartialBlob> partial ABSL_GUARDED_BY(mu);
  };
  static std::string PartialName(const std::string& upload_id, int index) {
    return upload_id + "-" + std::to_string(index);
  }
  mambaquant::v1::UploadFileState FileState(const std::string& upload_id, int index,
                                            const mambaquant::v1::FileEntry& file);

  RegistryStore* store_;
  BlobStore* blobs_;
  const UploadLimits limits_;
  absl::Mutex mu_;
  // Key: partial name. Files being received since the server started.
  std::map<std::string, std::shared_ptr<OpenFile>> open_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
