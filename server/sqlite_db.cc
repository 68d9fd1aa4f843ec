#include "sqlite_db.h"

#include <sqlite3.h>

#include "absl/strings/str_cat.h"

namespace mq::server {
namespace {

absl::Status SqliteError(sqlite3* db, int rc, absl::string_view what) {
  std::string msg = absl::StrCat("sqlite ", what, ": ", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
  int primary = rc & 0xff;
  if (primary == SQLITE_CONSTRAINT) return absl::AlreadyExistsError(msg);
  if (primary == SQLITE_FULL) return absl::ResourceExhaustedError(msg);
  if (primary == SQLITE_BUSY || primary == SQLITE_LOCKED) return absl::UnavailableError(msg);
  return absl::InternalError(msg);
}

}  // namespace

SqliteStmt::~SqliteStmt() {
  if (stmt_ != nullptr) sqlite3_finalize(stmt_);
}

SqliteStmt::SqliteStmt(SqliteStmt&& other) noexcept
    : db_(other.db_), stmt_(other.stmt_), bind_error_(std::move(other.bind_error_)) {
  other.stmt_ = nullptr;
}

SqliteStmt& SqliteStmt::Bind(int index, int64_t value) {
  int rc = sqlite3_bind_int64(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStmt& SqliteStmt::Bind(int index, absl::string_view text) {
  int rc = sqlite3_bind_text64(stmt_, index, text.data(), text.size(), SQLITE_TRANSIENT, SQLITE_UTF8);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStmt& SqliteStmt::BindBlob(int index, absl::string_view bytes) {
  int rc = sqlite3_bind_blob64(stmt_, index, bytes.data(), bytes.size(), SQLITE_TRANSIENT);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStmt& SqliteStmt::BindDouble(int index, double value) {
  int rc = sqlite3_bind_double(stmt_, index, value);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind");
  return *this;
}

SqliteStmt& SqliteStmt::BindNull(int index) {
  int rc = sqlite3_bind_null(stmt_, index);
  if (rc != SQLITE_OK && bind_error_.ok()) bind_error_ = SqliteError(db_, rc, "bind");
  return *this;
}

absl::StatusOr<bool> SqliteStmt::Step() {
  if (!bind_error_.ok()) return bind_error_;
  int rc = sqlite3_step(stmt_);
  if (rc == SQLITE_ROW) return true;
  if (rc == SQLITE_DONE) return false;
  return SqliteError(db_, rc, "step");
}

absl::Status SqliteStmt::Run() {
  for (;;) {
    auto row = Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::OkStatus();
  }
}

int64_t SqliteStmt::Int(int column) const { return sqlite3_column_int64(stmt_, column); }
double SqliteStmt::Double(int column) const { return sqlite3_column_double(stmt_, column); }
bool SqliteStmt::IsNull(int column) const { return sqlite3_column_type(stmt_, column) == SQLITE_NULL; }

std::string SqliteStmt::Text(int column) const {
  const unsigned char* p = sqlite3_column_text(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(reinterpret_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

std::string SqliteStmt::Blob(int column) const {
  const void* p = sqlite3_column_blob(stmt_, column);
  int n = sqlite3_column_bytes(stmt_, column);
  return p ? std::string(static_cast<const char*>(p), static_cast<size_t>(n)) : std::string();
}

absl::StatusOr<SqliteStmt> SqliteTx::Prepare(absl::string_view sql) {
  sqlite3_stmt* stmt = nullptr;
  sqlite3* db = db_->RawLocked();
  int rc = sqlite3_prepare_v2(db, sql.data(), static_cast<int>(sql.size()), &stmt, nullptr);
  if (rc != SQLITE_OK) return SqliteError(db, rc, absl::StrCat("prepare ", sql));
  return SqliteStmt(db, stmt);
}

absl::Status SqliteTx::Exec(absl::string_view sql) ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return db_->ExecLocked(sql);
}

int64_t SqliteTx::LastInsertRowId() const ABSL_NO_THREAD_SAFETY_ANALYSIS {
  return sqlite3_last_insert_rowid(db_->db_);
}

int SqliteTx::Changes() const ABSL_NO_THREAD_SAFETY_ANALYSIS { return sqlite3_changes(db_->db_); }

absl::StatusOr<std::unique_ptr<SqliteDb>> SqliteDb::Open(const std::string& path) {
  sqlite3* raw = nullptr;
  int rc = sqlite3_open_v2(path.c_str(), &raw,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  if (rc != SQLITE_OK) {
    absl::Status s = SqliteError(raw, rc, absl::StrCat("open ", path));
    sqlite3_close(raw);
    return s;
  }
  std::unique_ptr<SqliteDb> db(new SqliteDb(raw));
  sqlite3_busy_timeout(raw, 5000);
  absl::MutexLock lock(&db->mu_);
  // WAL: readers never block the writer; synchronous=FULL: a commit survives power loss, which is
  // what "persisted before acknowledged" needs.
  for (const char* pragma : {"PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA foreign_keys=ON"}) {
    absl::Status s = db->ExecLocked(pragma);
    if (!s.ok()) return s;
  }
  return db;
}

SqliteDb::~SqliteDb() ABSL_NO_THREAD_SAFETY_ANALYSIS { sqlite3_close_v2(db_); }

absl::Status SqliteDb::ExecLocked(absl::string_view sql) {
  std::string copy(sql);
  char* err = nullptr;
  int rc = sqlite3_exec(db_, copy.c_str(), nullptr, nullptr, &err);
  if (rc != SQLITE_OK) {
    std::string msg = err ? err : sqlite3_errstr(rc);
    sqlite3_free(err);
    absl::Status s = SqliteError(nullptr, rc, copy);
    return absl::Status(s.code(), absl::StrCat("sqlite exec: ", msg));
  }
  return absl::OkStatus();
}

absl::Status SqliteDb::Transaction(absl::FunctionRef<absl::Status(SqliteTx&)> fn) {
  absl::MutexLock lock(&mu_);
  absl::Status s = ExecLocked("BEGIN IMMEDIATE");
  if (!s.ok()) return s;
  SqliteTx tx(this);
  s = fn(tx);
  if (s.ok()) s = ExecLocked("COMMIT");
  if (!s.ok()) {
    (void)ExecLocked("ROLLBACK");
  }
  return s;
}

absl::Status SqliteDb::Read(absl::FunctionRef<absl::Status(SqliteTx&)> fn) {
  absl::MutexLock lock(&mu_);
  SqliteTx tx(this);
  return fn(tx);
}

}  // namespace mq::server
