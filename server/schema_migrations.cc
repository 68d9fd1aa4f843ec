#include "schema_migrations.h"

#include "absl/strings/str_cat.h"

namespace mq::server {

const std::vector<Migration>& SchemaMigrations() {
  static const std::vector<Migration>* migrations = new std::vector<Migration>{
      {1, R"sql(
CREATE TABLE artifacts (
  id             INTEGER PRIMARY KEY,
  kind           INTEGER NOT NULL,           -- mambaquant.v1.ArtifactKind
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL,
  artifact       BLOB    NOT NULL,           -- serialized mambaquant.v1.Artifact
  create_time_ms INTEGER NOT NULL,
  UNIQUE (kind, name, version)
);
CREATE TABLE artifact_files (
  artifact_id INTEGER NOT NULL REFERENCES artifacts(id) ON DELETE CASCADE,
  path        TEXT    NOT NULL,
  size        INTEGER NOT NULL,
  sha256      TEXT    NOT NULL,
  PRIMARY KEY (artifact_id, path)
);
CREATE INDEX artifact_files_by_sha256 ON artifact_files (sha256);
CREATE TABLE uploads (
  id             TEXT    PRIMARY KEY,
  request        BLOB    NOT NULL,           -- serialized mambaquant.v1.CreateUploadRequest
  job_id         TEXT    NOT NULL DEFAULT '', -- result uploads: the job that produces them
  create_time_ms INTEGER NOT NULL,
  touch_time_ms  INTEGER NOT NULL
);
CREATE TABLE jobs (
  seq        INTEGER PRIMARY KEY AUTOINCREMENT, -- submission order; paging and FIFO scheduling
  id         TEXT    NOT NULL UNIQUE,
  state      INTEGER NOT NULL,                  -- mambaquant.v1.JobState
  model_name TEXT    NOT NULL,
  worker_id  TEXT    NOT NULL DEFAULT '',
  job        BLOB    NOT NULL                   -- serialized mambaquant.v1.Job snapshot
);
CREATE INDEX jobs_by_state ON jobs (state, seq);
CREATE INDEX jobs_by_worker ON jobs (worker_id, state);
CREATE TABLE workers (
  id               TEXT    PRIMARY KEY,
  info             BLOB    NOT NULL,          -- serialized mambaquant.v1.RegisterWorkerRequest
  lease_expires_ms INTEGER NOT NULL,
  registered_ms    INTEGER NOT NULL
);
)sql"},
      // CommitUpload retried after it took effect answers with the version it made (the upload
      // record itself is gone by then).
      {2, R"sql(
CREATE TABLE committed_uploads (
  upload_id      TEXT    PRIMARY KEY,
  kind           INTEGER NOT NULL,
  name           TEXT    NOT NULL,
  version        INTEGER NOT NULL,
  commit_time_ms INTEGER NOT NULL
);
CREATE INDEX committed_uploads_by_artifact ON committed_uploads (kind, name, version);
)sql"},
      // Worker ids bound to the identity that registered them (worker_ownership.h), so that a
      // restarted server still refuses another certificate claiming a bound id. Kept apart from
      // `workers`: a binding outlives the worker's lease and ends only with Deregister.
      {3, R"sql(
CREATE TABLE worker_identities (
  worker_id TEXT    PRIMARY KEY,
  identity  TEXT    NOT NULL,
  bound_ms  INTEGER NOT NULL
);
)sql"},
      // The highest version ever given to each name, so that a deleted version's number is never
      // given to other content (a job's source_model or a client's pinned name:version would
      // silently point at other bytes). Backfilled from the versions that exist or were committed.
      {4, R"sql(
CREATE TABLE artifact_names (
  kind         INTEGER NOT NULL,
  name         TEXT    NOT NULL,
  last_version INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
);
INSERT INTO artifact_names (kind, name, last_version)
  SELECT kind, name, MAX(version) FROM
    (SELECT kind, name, version FROM artifacts UNION ALL SELECT kind, name, version FROM committed_uploads)
  GROUP BY kind, name;
)sql"},
  };
  return *migrations;
}

absl::StatusOr<int> SchemaVersion(SqliteDb& db) {
  int version = 0;
  absl::Status s = db.Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("PRAGMA user_version");
    if (!stmt.ok()) return stmt.status();
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    version = *row ? static_cast<int>(stmt->Int(0)) : 0;
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return version;
}

absl::Status MigrateSchema(SqliteDb& db, const std::vector<Migration>& migrations) {
  auto current = SchemaVersion(db);
  if (!current.ok()) return current.status();
  int latest = migrations.empty() ? 0 : migrations.back().version;
  if (*current > latest) {
    return absl::FailedPreconditionError(absl::StrCat(
        "database schema version ", *current, " is newer than this build supports (", latest,
        "); run a newer mq-server"));
  }
  for (const Migration& m : migrations) {
    if (m.version <= *current) continue;
    absl::Status s = db.Transaction([&](SqliteTx& tx) -> absl::Status {
      absl::Status st = tx.Exec(m.sql);
      if (!st.ok()) return st;
      return tx.Exec(absl::StrCat("PRAGMA user_version = ", m.version));
    });
    if (!s.ok()) {
      return absl::Status(s.code(), absl::StrCat("schema migration to version ", m.version, ": ", s.message()));
    }
  }
  return absl::OkStatus();
}

}  // namespace mq::server
