#include "registry.h"

#include "absl/strings/str_cat.h"
#include "log.h"
#include "name_validation.h"
#include "proto_time.h"

namespace mq::server {

using mambaquant::v1::Artifact;

absl::StatusOr<Artifact> Registry::CommitUpload(const std::string& upload_id, absl::Time now,
                                                const CommitHooks& hooks) {
  auto record = store_->GetUpload(upload_id);
  if (absl::IsNotFound(record.status())) return RepeatedCommit(upload_id, hooks);
  if (!record.ok()) return record.status();
  const auto& req = record->request;
  Artifact artifact;
  artifact.set_kind(req.kind());
  artifact.set_name(req.name());
  artifact.set_version(req.version());
  artifact.set_description(req.description());
  *artifact.mutable_labels() = req.labels();
  *artifact.mutable_files() = req.files();
  SetTimestamp(now, artifact.mutable_create_time());

  absl::ReaderMutexLock gc_lock(&gc_mu_);
  for (const auto& f : req.files()) {
    auto size = blobs_->BlobSize(f.sha256());
    if (!size.ok() || *size != f.size()) {
      return absl::FailedPreconditionError(
          absl::StrCat("file ", f.path(), " of upload ", upload_id, " is incomplete; send its remaining bytes first"));
    }
  }
  absl::Status s = req.kind() == mambaquant::v1::ARTIFACT_KIND_MODEL
                       ? ValidateModelContent(&artifact, *blobs_, uploads_->limits(), hook_)
                       : ValidateDatasetContent(artifact, *blobs_, uploads_->limits());
  if (!s.ok()) return s;
  if (hooks.prepare) {
    s = hooks.prepare(&artifact);
    if (!s.ok()) return s;
  }
  Artifact stored;
  bool committed_meanwhile = false;
  s = store_->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
    // Another call committed this upload while this one validated it (concurrent CommitUpload or
    // FinishJob retries): this one is a repeat, answered below as one (NOT_FOUND when the upload
    // was aborted or expired instead).
    auto pending = store_->UploadPendingTx(tx, upload_id);
    if (!pending.ok()) return pending.status();
    if (!*pending) {
      committed_meanwhile = true;
      return absl::OkStatus();
    }
    auto inserted = store_->InsertTx(tx, artifact);
    if (!inserted.ok()) return inserted.status();
    stored = *std::move(inserted);
    if (hooks.after_insert) {
      absl::Status st = hooks.after_insert(tx, stored);
      if (!st.ok()) return st;
    }
    absl::Status st = store_->RecordCommitTx(tx, upload_id, stored, now);
    if (!st.ok()) return st;
    return store_->DeleteUploadTx(tx, upload_id);
  });
  if (!s.ok()) return s;
  if (committed_meanwhile) return RepeatedCommit(upload_id, hooks);
  uploads_->Release(*record);
  Log(LogLevel::kInfo, "registered")
      .Kv("kind", req.kind() == mambaquant::v1::ARTIFACT_KIND_MODEL ? "model" : "dataset")
      .Kv("ref", FormatRef(stored.name(), stored.version()))
      .Kv("bytes", static_cast<uint64_t>(stored.total_size()))
      .Kv("upload", upload_id);
  return stored;
}

absl::StatusOr<Artifact> Registry::RepeatedCommit(const std::string& upload_id, const CommitHooks& hooks) {
  Artifact committed;
  absl::Status s = store_->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto got = store_->CommittedUploadTx(tx, upload_id);
    if (!got.ok()) return got.status();
    committed = *std::move(got);
    return hooks.after_insert ? hooks.after_insert(tx, committed) : absl::OkStatus();
  });
  if (!s.ok()) return s;
  return committed;
}

absl::StatusOr<Artifact> Registry::Get(mambaquant::v1::ArtifactKind kind, const std::string& ref) {
  auto parsed = ParseRef(ref);
  if (!parsed.ok()) return parsed.status();
  return store_->Get(kind, *parsed);
}

absl::StatusOr<ArtifactPage> Registry::List(mambaquant::v1::ArtifactKind kind, const std::string& name, int page_size,
                                            const std::string& page_token) {
  if (!name.empty()) {
    absl::Status s = ValidateName(name);
    if (!s.ok()) return s;
  }
  return store_->List(kind, name, page_size, page_token);
}

absl::StatusOr<int64_t> Registry::CollectUnreferencedBlobs(absl::Time now, absl::Duration grace) {
  // Exclusive: no commit checks its blobs and inserts its version meanwhile.
  absl::MutexLock gc_lock(&gc_mu_);
  auto blobs = blobs_->ListBlobs();
  if (!blobs.ok()) return blobs.status();
  auto keep = store_->ReferencedDigests();
  if (!keep.ok()) return keep.status();
  int64_t removed = 0;
  for (const auto& b : *blobs) {
    if (b.modified > now - grace || keep->count(b.sha256) > 0) continue;
    absl::Status rm = blobs_->Remove(b.sha256);
    if (!rm.ok()) {
      Log(LogLevel::kWarning, "removing unreferenced blob failed").Kv("sha256", b.sha256).Kv("error", rm);
      continue;
    }
    ++removed;
  }
  if (removed > 0) Log(LogLevel::kInfo, "collected unreferenced blobs").Kv("removed", removed);
  return removed;
}

absl::Status Registry::Delete(mambaquant::v1::ArtifactKind kind, const std::string& ref,
                              const std::function<absl::Status(SqliteTx&, const std::string&)>& in_delete) {
  auto parsed = ParseRef(ref);
  if (!parsed.ok()) return parsed.status();
  if (parsed->version == 0) {
    return absl::InvalidArgumentError(absl::StrCat("delete needs an explicit version: ", parsed->name, ":<version>"));
  }
  absl::MutexLock gc_lock(&gc_mu_);
  std::vector<std::string> orphans;
  absl::Status s = store_->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
    if (in_delete) {
      absl::Status st = in_delete(tx, FormatRef(parsed->name, parsed->version));
      if (!st.ok()) return st;
    }
    auto got = store_->DeleteTx(tx, kind, parsed->name, parsed->version);
    if (!got.ok()) return got.status();
    orphans = *std::move(got);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  for (const std::string& digest : orphans) {
    absl::Status rm = blobs_->Remove(digest);
    if (!rm.ok()) Log(LogLevel::kWarning, "removing orphaned blob failed").Kv("sha256", digest).Kv("error", rm);
  }
  Log(LogLevel::kInfo, "deleted").Kv("ref", FormatRef(parsed->name, parsed->version)).Kv("blobs_removed", static_cast<int64_t>(orphans.size()));
  return absl::OkStatus();
}

}  // namespace mq::server
