// Persistent registry: artifact versions (models and datasets) with their files, and the records
// of unfinished uploads. The bytes live in the BlobStore; this holds names, versions and digests.
#pragma once

#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mambaquant/v1/registry.pb.h"
#include "name_validation.h"
#include "page_limits.h"
#include "sqlite_db.h"

namespace mq::server {

struct UploadRecord {
  std::string id;
  mambaquant::v1::CreateUploadRequest request;
  std::string job_id;  // result uploads only
  absl::Time created;
  absl::Time touched;
};

struct ArtifactPage {
  std::vector<mambaquant::v1::Artifact> artifacts;
  std::string next_page_token;
};

class RegistryStore {
 public:
  explicit RegistryStore(SqliteDb* db) : db_(db) {}

  absl::Status InsertUpload(const UploadRecord& record);
  absl::StatusOr<UploadRecord> GetUpload(const std::string& id);
  // Whether the upload is still unfinished (not committed, aborted or expired).
  absl::StatusOr<bool> UploadPendingTx(SqliteTx& tx, const std::string& id);
  absl::Status TouchUpload(const std::string& id, absl::Time now);
  absl::Status DeleteUploadTx(SqliteTx& tx, const std::string& id);
  absl::Status DeleteUpload(const std::string& id);
  // Uploads untouched since `cutoff`.
  absl::StatusOr<std::vector<UploadRecord>> StaleUploads(absl::Time cutoff);

  // Inserts an artifact version. version 0 takes the next free version of the name.
  // ALREADY_EXISTS when the version is taken. Returns the stored artifact.
  absl::StatusOr<mambaquant::v1::Artifact> InsertTx(SqliteTx& tx, mambaquant::v1::Artifact artifact);
  // The version a new artifact `name` would get: `version` (0: the next one) if the rule allows it
  // — versions only increase, none past kMaxVersion — else the error InsertTx would give (the one
  // owner of that rule; CreateUpload and SubmitJob ask before bytes are sent or a job runs).
  absl::StatusOr<int64_t> NextVersionTx(SqliteTx& tx, mambaquant::v1::ArtifactKind kind, const std::string& name,
                                        int64_t version);
  absl::StatusOr<int64_t> NextVersion(mambaquant::v1::ArtifactKind kind, const std::string& name, int64_t version);
  absl::StatusOr<bool> VersionExists(mambaquant::v1::ArtifactKind kind, const std::string& name, int64_t version);
  // ref.version 0 resolves to the latest version. NOT_FOUND when absent.
  absl::StatusOr<mambaquant::v1::Artifact> Get(mambaquant::v1::ArtifactKind kind, const ArtifactRef& ref);
  absl::StatusOr<mambaquant::v1::Artifact> GetTx(SqliteTx& tx, mambaquant::v1::ArtifactKind kind,
                                                 const ArtifactRef& ref);
  // Newest first. name empty: every name. At most page_size artifacts and kMaxListPageBytes.
  absl::StatusOr<ArtifactPage> List(mambaquant::v1::ArtifactKind kind, const std::string& name, int page_size,
                                    const std::string& page_token);
  // Deletes one version; returns the digests no artifact references any more.
  absl::StatusOr<std::vector<std::string>> DeleteTx(SqliteTx& tx, mambaquant::v1::ArtifactKind kind,
                                                    const std::string& name, int64_t version);
  // Remembers which version an upload became, so a retried CommitUpload can answer with it.
  absl::Status RecordCommitTx(SqliteTx& tx, const std::string& upload_id, const mambaquant::v1::Artifact& stored,
                              absl::Time now);
  // The artifact a committed upload became; NOT_FOUND when the upload was never committed or its
  // version has been deleted since.
  absl::StatusOr<mambaquant::v1::Artifact> CommittedUploadTx(SqliteTx& tx, const std::string& upload_id);
  // Every digest an artifact version or an unfinished upload names (blobs to keep).
  absl::StatusOr<std::set<std::string>> ReferencedDigests();
  // Whether any artifact references the digest.
  absl::StatusOr<bool> DigestReferencedTx(SqliteTx& tx, const std::string& sha256);

  SqliteDb* db() { return db_; }

 private:
  SqliteDb* db_;
};

}  // namespace mq::server
