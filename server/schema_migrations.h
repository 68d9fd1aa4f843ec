// The SQLite schema of mq-server and its migrations. The schema version lives in
// PRAGMA user_version; each migration runs in its own transaction together with the version bump,
// so a crash leaves the database at one version or the next, never in between.
#pragma once

#include <vector>

#include "absl/status/status.h"
#include "sqlite_db.h"

namespace mq::server {

struct Migration {
  int version;      // the user_version after this migration; 1, 2, 3... in order
  const char* sql;  // one or more statements
};

// The migrations of this build, oldest first.
const std::vector<Migration>& SchemaMigrations();

// Applies every migration newer than the database's user_version. FAILED_PRECONDITION when the
// database was written by a newer build (its version is above the last migration).
absl::Status MigrateSchema(SqliteDb& db, const std::vector<Migration>& migrations = SchemaMigrations());

absl::StatusOr<int> SchemaVersion(SqliteDb& db);

}  // namespace mq::server
