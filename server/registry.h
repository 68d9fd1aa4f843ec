// The model and dataset registry as the services use it: commits uploads into versions, resolves
// references, deletes versions and collects blobs no version references.
//
// gc_mu_ orders blob deletion against commits: a commit checks that its blobs exist and inserts
// the version under a shared lock; a delete removes the version and then its orphaned blobs
// under an exclusive lock. So a commit never references a blob a delete is about to remove.
#pragma once

#include <functional>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "artifact_validation.h"
#include "blob_store.h"
#include "mambaquant/v1/registry.pb.h"
#include "registry_store.h"
#include "upload_manager.h"

namespace mq::server {

class Registry {
 public:
  Registry(RegistryStore* store, BlobStore* blobs, UploadManager* uploads, ModelContentHook hook)
      : store_(store), blobs_(blobs), uploads_(uploads), hook_(std::move(hook)) {}

  // Optional steps of a commit: `prepare` adjusts the artifact before it is inserted
  // (provenance); `after_insert` runs in the same transaction once the version is known, to write
  // other rows atomically with it (the job's SUCCEEDED state). A repeat of a commit that took
  // effect runs `after_insert` again, with the version that commit made, so it must be idempotent.
  struct CommitHooks {
    std::function<absl::Status(mambaquant::v1::Artifact*)> prepare;
    std::function<absl::Status(SqliteTx&, const mambaquant::v1::Artifact&)> after_insert;
  };

  // FAILED_PRECONDITION: files incomplete; INVALID_ARGUMENT: content invalid; ALREADY_EXISTS:
  // version taken. On success the upload record is gone. Idempotent: a repeat of a commit that
  // took effect, after it or concurrently with it, answers the version it made (NOT_FOUND once
  // that version is deleted); only one version is ever made.
  absl::StatusOr<mambaquant::v1::Artifact> CommitUpload(const std::string& upload_id, absl::Time now,
                                                        const CommitHooks& hooks = {});

  absl::StatusOr<mambaquant::v1::Artifact> Get(mambaquant::v1::ArtifactKind kind, const std::string& ref);
  absl::StatusOr<ArtifactPage> List(mambaquant::v1::ArtifactKind kind, const std::string& name, int page_size,
                                    const std::string& page_token);
  // `in_delete` runs in the delete transaction first (refuse while unfinished jobs use it).
  absl::Status Delete(mambaquant::v1::ArtifactKind kind, const std::string& ref,
                      const std::function<absl::Status(SqliteTx&, const std::string& resolved_ref)>& in_delete);

  // Removes blobs that no artifact version and no unfinished upload names, once older than
  // `grace` (so a blob just completed by an upload whose record is being written stays): what
  // rejected, aborted and expired uploads left behind. Returns how many were removed.
  absl::StatusOr<int64_t> CollectUnreferencedBlobs(absl::Time now, absl::Duration grace);

  BlobStore* blobs() { return blobs_; }
  RegistryStore* store() { return store_; }

 private:
  // The answer to a commit of an upload that is no longer pending: the version it became.
  absl::StatusOr<mambaquant::v1::Artifact> RepeatedCommit(const std::string& upload_id, const CommitHooks& hooks);

  RegistryStore* store_;
  BlobStore* blobs_;
  UploadManager* uploads_;
  ModelContentHook hook_;
  absl::Mutex gc_mu_;
};

}  // namespace mq::server
