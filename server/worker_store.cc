#include "worker_store.h"

#include "absl/strings/str_cat.h"
#include "proto_time.h"
#include "random_id.h"

namespace mq::server {

absl::StatusOr<std::string> WorkerStore::Register(const mambaquant::v1::RegisterWorkerRequest& info,
                                                  absl::Time now, absl::Duration lease) {
  std::string id = info.worker_id().empty() ? NewWorkerId() : info.worker_id();
  mambaquant::v1::RegisterWorkerRequest stored = info;
  stored.set_worker_id(id);
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare(
        "INSERT INTO workers (id, info, lease_expires_ms, registered_ms) VALUES (?1, ?2, ?3, ?4) "
        "ON CONFLICT(id) DO UPDATE SET info = excluded.info, lease_expires_ms = excluded.lease_expires_ms");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id).BindBlob(2, stored.SerializeAsString()).Bind(3, ToMillis(now + lease)).Bind(4, ToMillis(now));
    return stmt->Run();
  });
  if (!s.ok()) return s;
  return id;
}

absl::Status WorkerStore::Renew(const std::string& id, absl::Time now, absl::Duration lease) {
  return db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("UPDATE workers SET lease_expires_ms = ?1 WHERE id = ?2");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, ToMillis(now + lease)).Bind(2, id);
    absl::Status s = stmt->Run();
    if (!s.ok()) return s;
    if (tx.Changes() == 0) {
      return absl::NotFoundError(absl::StrCat("worker ", id, " is not registered (lease expired?); register again"));
    }
    return absl::OkStatus();
  });
}

namespace {

absl::StatusOr<WorkerRecord> RowToRecord(const SqliteStmt& stmt) {
  WorkerRecord r;
  r.id = stmt.Text(0);
  if (!r.info.ParseFromString(stmt.Blob(1))) return absl::DataLossError("stored worker does not parse");
  r.lease_expires = FromMillis(stmt.Int(2));
  r.registered = FromMillis(stmt.Int(3));
  return r;
}

}  // namespace

absl::StatusOr<WorkerRecord> WorkerStore::Get(const std::string& id) {
  absl::StatusOr<WorkerRecord> out = absl::NotFoundError(absl::StrCat("worker ", id, " is not registered"));
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT id, info, lease_expires_ms, registered_ms FROM workers WHERE id = ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    auto row = stmt->Step();
    if (!row.ok()) return row.status();
    if (*row) out = RowToRecord(*stmt);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<WorkerRecord>> WorkerStore::List() {
  std::vector<WorkerRecord> out;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT id, info, lease_expires_ms, registered_ms FROM workers ORDER BY registered_ms");
    if (!stmt.ok()) return stmt.status();
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      auto r = RowToRecord(*stmt);
      if (!r.ok()) return r.status();
      out.push_back(*std::move(r));
    }
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::vector<std::string>> WorkerStore::Expired(absl::Time now) {
  std::vector<std::string> out;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT id FROM workers WHERE lease_expires_ms < ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, ToMillis(now));
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.push_back(stmt->Text(0));
    }
  });
  if (!s.ok()) return s;
  return out;
}

absl::Status WorkerStore::RemoveTx(SqliteTx& tx, const std::string& id) {
  auto stmt = tx.Prepare("DELETE FROM workers WHERE id = ?1");
  if (!stmt.ok()) return stmt.status();
  stmt->Bind(1, id);
  return stmt->Run();
}

absl::Status WorkerStore::RenewAll(absl::Time now, absl::Duration lease) {
  return db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("UPDATE workers SET lease_expires_ms = ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, ToMillis(now + lease));
    return stmt->Run();
  });
}

absl::StatusOr<std::map<std::string, std::string>> WorkerStore::LoadIdentities() {
  std::map<std::string, std::string> out;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT worker_id, identity FROM worker_identities");
    if (!stmt.ok()) return stmt.status();
    while (true) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      out.emplace(stmt->Text(0), stmt->Text(1));
    }
  });
  if (!s.ok()) return s;
  return out;
}

absl::StatusOr<std::string> WorkerStore::BindIdentity(const std::string& id, const std::string& identity, absl::Time now) {
  std::string bound;
  absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto insert = tx.Prepare(
        "INSERT INTO worker_identities (worker_id, identity, bound_ms) VALUES (?1, ?2, ?3) "
        "ON CONFLICT(worker_id) DO NOTHING");
    if (!insert.ok()) return insert.status();
    insert->Bind(1, id).Bind(2, identity).Bind(3, ToMillis(now));
    if (absl::Status r = insert->Run(); !r.ok()) return r;
    auto select = tx.Prepare("SELECT identity FROM worker_identities WHERE worker_id = ?1");
    if (!select.ok()) return select.status();
    select->Bind(1, id);
    auto row = select->Step();
    if (!row.ok()) return row.status();
    if (!*row) return absl::InternalError(absl::StrCat("worker ", id, ": identity binding vanished"));
    bound = select->Text(0);
    return absl::OkStatus();
  });
  if (!s.ok()) return s;
  return bound;
}

absl::Status WorkerStore::ForgetIdentity(const std::string& id) {
  return db_->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("DELETE FROM worker_identities WHERE worker_id = ?1");
    if (!stmt.ok()) return stmt.status();
    stmt->Bind(1, id);
    return stmt->Run();
  });
}

}  // namespace mq::server
