// One SQLite connection in WAL mode, serialized by a mutex. Every statement runs inside
// Transaction(), which holds the mutex for its duration, so stores can compose several
// statements (a job transition plus a registry insert) into one atomic, durable commit.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"

struct sqlite3;
struct sqlite3_stmt;

namespace mq::server {

class SqliteDb;

// A prepared statement; valid only inside the transaction that created it.
class SqliteStmt {
 public:
  ~SqliteStmt();
  SqliteStmt(SqliteStmt&& other) noexcept;
  SqliteStmt& operator=(SqliteStmt&&) = delete;
  SqliteStmt(const SqliteStmt&) = delete;

  // Parameters are 1-based, as in SQLite.
  SqliteStmt& Bind(int index, int64_t value);
  SqliteStmt& Bind(int index, absl::string_view text);
  SqliteStmt& Bind(int index, const std::string& text) { return Bind(index, absl::string_view(text)); }
  SqliteStmt& Bind(int index, const char* text) { return Bind(index, absl::string_view(text)); }
  SqliteStmt& BindBlob(int index, absl::string_view bytes);
  SqliteStmt& BindDouble(int index, double value);
  SqliteStmt& BindNull(int index);

  // Steps once: true when a row is available, false when done.
  absl::StatusOr<bool> Step();
  // Steps to completion, for statements without results.
  absl::Status Run();

  int64_t Int(int column) const;
  double Double(int column) const;
  std::string Text(int column) const;
  std::string Blob(int column) const;
  bool IsNull(int column) const;

 private:
  friend class SqliteTx;
  SqliteStmt(sqlite3* db, sqlite3_stmt* stmt) : db_(db), stmt_(stmt) {}
  sqlite3* db_;
  sqlite3_stmt* stmt_;
  absl::Status bind_error_;
};

// Proof that the caller holds the connection inside a transaction.
class SqliteTx {
 public:
  absl::StatusOr<SqliteStmt> Prepare(absl::string_view sql);
  absl::Status Exec(absl::string_view sql);
  int64_t LastInsertRowId() const;
  int Changes() const;

 private:
  friend class SqliteDb;
  explicit SqliteTx(SqliteDb* db) : db_(db) {}
  SqliteDb* db_;
};

class SqliteDb {
 public:
  // Opens (creating) the database file with WAL, synchronous=FULL, foreign keys and a busy
  // timeout. ":memory:" works for tests.
  static absl::StatusOr<std::unique_ptr<SqliteDb>> Open(const std::string& path);
  ~SqliteDb();

  // Runs fn between BEGIN IMMEDIATE and COMMIT; any error rolls back and is returned. Not
  // reentrant.
  absl::Status Transaction(absl::FunctionRef<absl::Status(SqliteTx&)> fn) ABSL_LOCKS_EXCLUDED(mu_);
  // For reads that need no atomicity across statements (still serialized).
  absl::Status Read(absl::FunctionRef<absl::Status(SqliteTx&)> fn) ABSL_LOCKS_EXCLUDED(mu_);

 private:
  friend class SqliteTx;
  explicit SqliteDb(sqlite3* db) : db_(db) {}
  absl::Status ExecLocked(absl::string_view sql) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Only SqliteTx calls this, and a SqliteTx exists only while mu_ is held.
  sqlite3* RawLocked() ABSL_NO_THREAD_SAFETY_ANALYSIS { return db_; }

  absl::Mutex mu_;
  sqlite3* db_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
