#include "registry_store.h"

#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "name_validation.h"
#include "proto_time.h"
#include "sha256.h"

namespace mq::server {

using mambaquant::v1::Artifact;
using mambaquant::v1::ArtifactKind;

namespace {

const char* KindName(ArtifactKind kind) { return kind == mambaquant::v1::ARTIFACT_KIND_DATASET ? "dataset" : "model"; }

absl::StatusOr<Artifact> ParseArtifact(const std::string& bytes) {
  Artifact a;
  if (!a.ParseFromString(bytes)) return absl::DataLossError("stored artifact does not parse");
  return a;
}

}  // namespace

absl::Status RegistryStore::InsertUpload(const UploadRecord& record) {
  return db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare(
        "INSERT INTO uploads (id, request, job_id, create_time_ms, touch_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, record.id)
        .BindBlob(2, record.request.SerializeAsString())
        .Bind(3, record.job_id)
        .Bind(4, ToMillis(record.created))
        .Bind(5, ToMillis(record.touched));
    return stmt->Run();
  });
}

absl::StatusOr<UploadRecord> RegistryStore::GetUpload(const std::string& id) {
  absl::StatusOr<UploadRecord> out = absl::NotFoundError(absl::StrCat("upload ", id, " not found (expired or committed?)"));
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT request, job_id, create_time_ms, touch_time_ms FROM uploads WHERE id = ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
    UploadRecord r;
    r.id = id;
    if (!r.request.ParseFromString(stmt->Blob(0))) return absl::DataLossError("stored upload does not parse");
    r.job_id = stmt->Text(1);
    r.created = FromMillis(stmt->Int(2));
    r.touched = FromMillis(stmt->Int(3));
    out = std::move(r);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<bool> RegistryStore::UploadPendingTx(SqliteTx& tx, const std::string& id) {
  auto stmt = tx.Prepare("SELECT 1 FROM uploads WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  return stmt->Step();
}

absl::Status RegistryStore::TouchUpload(const std::string& id, absl::Time now) {
  return db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("UPDATE uploads SET touch_time_ms = ?1 WHERE id = ?2");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, ToMillis(now)).Bind(2, id);
    return stmt->Run();
  });
}

absl::Status RegistryStore::DeleteUploadTx(SqliteTx& tx, const std::string& id) {
  auto stmt = tx.Prepare("DELETE FROM uploads WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  return stmt->Run();
}

absl::Status RegistryStore::DeleteUpload(const std::string& id) {
  return db_->Transaction([&](SqliteTx& tx) { return DeleteUploadTx(tx, id); });
}

absl::StatusOr<std::vector<UploadRecord>> RegistryStore::StaleUploads(absl::Time cutoff) {
  std::vector<UploadRecord> out;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT id, request, job_id, create_time_ms, touch_time_ms FROM uploads WHERE touch_time_ms < ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, ToMillis(cutoff));
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      UploadRecord r;
      r.id = stmt->Text(0);
      if (!r.request.ParseFromString(stmt->Blob(1))) return absl::DataLossError("stored upload does not parse");
      r.job_id = stmt->Text(2);
      r.created = FromMillis(stmt->Int(3));
      r.touched = FromMillis(stmt->Int(4));
      out.push_back(std::move(r));
    }
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<int64_t> RegistryStore::NextVersionTx(SqliteTx& tx, ArtifactKind kind, const std::string& name,
                                                     int64_t version) {
  if (version != 0 && (version < 1 || version > kMaxVersion))
    return absl::InvalidArgumentError(absl::StrCat("version must be 1..", kMaxVersion));
  // The highest version this name ever had, deleted ones included (artifact_names): numbers are
  // never reused, so a name:version once seen always means the same bytes.
  int64_t last = 0;
  {
    auto stmt = tx.Prepare(
        "SELECT MAX(COALESCE((SELECT MAX(version) FROM artifacts WHERE kind = ?1 AND name = ?2), 0),"
        " COALESCE((SELECT last_version FROM artifact_names WHERE kind = ?1 AND name = ?2), 0))");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, name);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    last = stmt->Int(0);
  }
  if (version == 0) {
    // Versions are addressable only up to kMaxVersion (references parse 1..2^31-1): past it a
    // new version could never be named, so the name is full.
    if (last >= kMaxVersion) {
      return absl::ResourceExhaustedError(absl::StrCat(KindName(kind), " ", name, " has reached version ",
                                                       kMaxVersion, ", the last one; upload under another name"));
    }
    return last + 1;
  }
  if (version <= last) {
    auto exists = tx.Prepare("SELECT 1 FROM artifacts WHERE kind = ?1 AND name = ?2 AND version = ?3");
    if (!exists.ok()) return exists.status();
    exists->Bind(1, static_cast<int64_t>(kind)).Bind(2, name).Bind(3, version);
    auto row = exists->Step();
    if (!row.ok()) return row.status();
    if (!*row) {
      // Free, but below the highest version the name has had: deleted, or skipped by an explicit
      // --version above it. Which one is not recorded, so the message says only what holds.
      return absl::AlreadyExistsError(absl::StrCat(KindName(kind), " ", FormatRef(name, version),
                                                   " cannot be created: versions only increase, the next version of ",
                                                   name, " is ", last + 1));
    }
  }
  return version;  // taken: the insert answers ALREADY_EXISTS
}

absl::StatusOr<int64_t> RegistryStore::NextVersion(ArtifactKind kind, const std::string& name, int64_t version) {
  absl::StatusOr<int64_t> next = absl::InternalError("not read");
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    next = NextVersionTx(tx, kind, name, version);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return next;
}

absl::StatusOr<Artifact> RegistryStore::InsertTx(SqliteTx& tx, Artifact artifact) {
  auto version = NextVersionTx(tx, artifact.kind(), artifact.name(), artifact.version());
  if (!version.ok()) return version.status();
  artifact.set_version(*version);
  {
    auto stmt = tx.Prepare(
        "INSERT INTO artifact_names (kind, name, last_version) VALUES (?1, ?2, ?3) "
        "ON CONFLICT (kind, name) DO UPDATE SET last_version = MAX(last_version, excluded.last_version)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(artifact.kind())).Bind(2, artifact.name()).Bind(3, artifact.version());
    absl::Status s = stmt->Run();
    if (!s.ok()) return s;
  }
  uint64_t total = 0;
  for (const auto& f : artifact.files()) total += f.size();
  artifact.set_total_size(total);
  {
    auto stmt = tx.Prepare(
        "INSERT INTO artifacts (kind, name, version, artifact, create_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(artifact.kind()))
        .Bind(2, artifact.name())
        .Bind(3, artifact.version())
        .BindBlob(4, artifact.SerializeAsString())
        .Bind(5, ToMillis(FromTimestamp(artifact.create_time())));
    absl::Status s = stmt->Run();
    if (absl::IsAlreadyExists(s)) {
      return absl::AlreadyExistsError(absl::StrCat(KindName(artifact.kind()), " ",
                                                   FormatRef(artifact.name(), artifact.version()), " already exists"));
    }
    if (!s.ok()) return s;
  }
  int64_t id = tx.LastInsertRowId();
  for (const auto& f : artifact.files()) {
    auto stmt = tx.Prepare("INSERT INTO artifact_files (artifact_id, path, size, sha256) VALUES (?1, ?2, ?3, ?4)");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id).Bind(2, f.path()).Bind(3, static_cast<int64_t>(f.size())).Bind(4, f.sha256());
    absl::Status s = stmt->Run();
    if (!s.ok()) return s;
  }
  return artifact;
}

absl::StatusOr<bool> RegistryStore::VersionExists(ArtifactKind kind, const std::string& name, int64_t version) {
  bool exists = false;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT 1 FROM artifacts WHERE kind = ?1 AND name = ?2 AND version = ?3");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, name).Bind(3, version);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    exists = *row;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return exists;
}

absl::StatusOr<Artifact> RegistryStore::GetTx(SqliteTx& tx, ArtifactKind kind, const ArtifactRef& ref) {
  auto stmt = ref.version == 0
                  ? tx.Prepare("SELECT artifact FROM artifacts WHERE kind = ?1 AND name = ?2 ORDER BY version DESC LIMIT 1")
                  : tx.Prepare("SELECT artifact FROM artifacts WHERE kind = ?1 AND name = ?2 AND version = ?3");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, ref.name);
  if (ref.version != 0) stmt->Bind(3, ref.version);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) {
    return absl::NotFoundError(absl::StrCat(KindName(kind), " ",
                                            ref.version == 0 ? ref.name : FormatRef(ref.name, ref.version),
                                            " not found"));
  }
  return ParseArtifact(stmt->Blob(0));
}

absl::StatusOr<Artifact> RegistryStore::Get(ArtifactKind kind, const ArtifactRef& ref) {
  absl::StatusOr<Artifact> out = absl::InternalError("unset");
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    out = GetTx(tx, kind, ref);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<ArtifactPage> RegistryStore::List(ArtifactKind kind, const std::string& name, int page_size,
                                                 const std::string& page_token) {
  if (page_size <= 0) page_size = 100;
  if (page_size > 1000) return absl::InvalidArgumentError("page_size must be at most 1000");
  // A token is "a<id>.<query>": the last id of the page before and a digest of the query (kind,
  // name) it continues, so that a token of one listing is refused by another rather than
  // silently skipping its entries.
  const std::string query = Sha256Hex(absl::StrCat(static_cast<int>(kind), "/", name)).substr(0, 12);
  int64_t before_id = INT64_MAX;
  if (!page_token.empty()) {
    const size_t dot = page_token.find('.');
    if (page_token[0] != 'a' || dot == std::string::npos ||
        !absl::SimpleAtoi(page_token.substr(1, dot - 1), &before_id) || before_id <= 0) {
      return absl::InvalidArgumentError("invalid page_token");
    }
    if (page_token.substr(dot + 1) != query)
      return absl::InvalidArgumentError("page_token belongs to another listing (kind or name differ): start again without it");
  }
  ArtifactPage page;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    std::string sql = "SELECT id, artifact FROM artifacts WHERE kind = ?1 AND id < ?2";
    if (!name.empty()) sql += " AND name = ?3";
    absl::StrAppend(&sql, " ORDER BY id DESC LIMIT ", page_size + 1);
    auto stmt = tx.Prepare(sql);
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, before_id);
    if (!name.empty()) stmt->Bind(3, name);
    int64_t last_id = 0;
    size_t page_bytes = 0;
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      const std::string blob = stmt->Blob(1);
      const size_t bytes = blob.size();
      if (static_cast<int>(page.artifacts.size()) == page_size ||
          (!page.artifacts.empty() && page_bytes + bytes > kMaxListPageBytes)) {
        page.next_page_token = absl::StrCat("a", last_id, ".", query);
        return absl::OkStatus();
      }
      page_bytes += bytes;
      auto a = ParseArtifact(blob);
      if (!a.ok()) return a.status();
      last_id = stmt->Int(0);
      page.artifacts.push_back(*std::move(a));
    }
  });
  if (!s.ok()) return s;
  return page;
}

absl::Status RegistryStore::RecordCommitTx(SqliteTx& tx, const std::string& upload_id, const Artifact& stored,
                                           absl::Time now) {
  auto stmt = tx.Prepare(
      "INSERT INTO committed_uploads (upload_id, kind, name, version, commit_time_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, upload_id)
      .Bind(2, static_cast<int64_t>(stored.kind()))
      .Bind(3, stored.name())
      .Bind(4, stored.version())
      .Bind(5, ToMillis(now));
  return stmt->Run();
}

absl::StatusOr<Artifact> RegistryStore::CommittedUploadTx(SqliteTx& tx, const std::string& upload_id) {
  auto stmt = tx.Prepare("SELECT kind, name, version FROM committed_uploads WHERE upload_id = ?1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, upload_id);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  if (!*row) return absl::NotFoundError(absl::StrCat("upload ", upload_id, " not found (expired or aborted?)"));
  auto a = GetTx(tx, static_cast<ArtifactKind>(stmt->Int(0)), ArtifactRef{stmt->Text(1), stmt->Int(2)});
  if (!a.ok()) {
    return absl::NotFoundError(absl::StrCat("upload ", upload_id, " was committed, but its version has been deleted since"));
  }
  return a;
}

absl::StatusOr<std::set<std::string>> RegistryStore::ReferencedDigests() {
  std::set<std::string> out;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto files = tx.Prepare("SELECT DISTINCT sha256 FROM artifact_files");
    if (!files.ok()) return files.status();
    for (;;) {
      auto row = files->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      out.insert(files->Text(0));
    }
    auto uploads = tx.Prepare("SELECT request FROM uploads");
    if (!uploads.ok()) return uploads.status();
    for (;;) {
      auto row = uploads->Step();
      if (!row.ok()) return row.status();
      if (!*row) break;
      mambaquant::v1::CreateUploadRequest request;
      if (!request.ParseFromString(uploads->Blob(0))) return absl::DataLossError("an upload record does not parse");
      for (const auto& f : request.files()) out.insert(f.sha256());
    }
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<bool> RegistryStore::DigestReferencedTx(SqliteTx& tx, const std::string& sha256) {
  auto stmt = tx.Prepare("SELECT 1 FROM artifact_files WHERE sha256 = ?1 LIMIT 1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, sha256);
  auto row = stmt->Step();
  if (!row.ok()) return row.status();
  return *row;
}

absl::StatusOr<std::vector<std::string>> RegistryStore::DeleteTx(SqliteTx& tx, ArtifactKind kind,
                                                                 const std::string& name, int64_t version) {
  auto artifact = GetTx(tx, kind, ArtifactRef{name, version});
  if (!artifact.ok()) return artifact.status();
  {
    auto stmt = tx.Prepare("DELETE FROM artifacts WHERE kind = ?1 AND name = ?2 AND version = ?3");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, name).Bind(3, version);
    absl::Status s = stmt->Run();
    if (!s.ok()) return s;
  }
  {
    auto stmt = tx.Prepare("DELETE FROM committed_uploads WHERE kind = ?1 AND name = ?2 AND version = ?3");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, static_cast<int64_t>(kind)).Bind(2, name).Bind(3, version);
    absl::Status s = stmt->Run();
    if (!s.ok()) return s;
  }
  std::set<std::string> digests;
  for (const auto& f : artifact->files()) digests.insert(f.sha256());
  std::vector<std::string> orphans;
  for (const std::string& d : digests) {
    auto referenced = DigestReferencedTx(tx, d);
    if (!referenced.ok()) return referenced.status();
    if (!*referenced) orphans.push_back(d);
  }
  return orphans;
}

}  // namespace mq::server
