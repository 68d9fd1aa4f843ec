// Worker membership with leases, persisted so a restarted server still knows which workers hold
// which jobs. A worker is live while its lease has not expired; it renews it by heartbeat.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "mambaquant/v1/worker.pb.h"
#include "sqlite_db.h"

namespace mq::server {

struct WorkerRecord {
  std::string id;
  mambaquant::v1::RegisterWorkerRequest info;
  absl::Time lease_expires;
  absl::Time registered;
};

class WorkerStore {
 public:
  explicit WorkerStore(SqliteDb* db) : db_(db) {}

  // Registers (or re-registers under info.worker_id when set) and grants a lease until
  // now + lease. Returns the worker id.
  absl::StatusOr<std::string> Register(const mambaquant::v1::RegisterWorkerRequest& info, absl::Time now,
                                       absl::Duration lease);
  // Extends the lease. NOT_FOUND when the worker is unknown (dropped after expiry).
  absl::Status Renew(const std::string& id, absl::Time now, absl::Duration lease);
  absl::StatusOr<WorkerRecord> Get(const std::string& id);
  absl::StatusOr<std::vector<WorkerRecord>> List();
  // Workers whose lease ended before `now`.
  absl::StatusOr<std::vector<std::string>> Expired(absl::Time now);
  absl::Status RemoveTx(SqliteTx& tx, const std::string& id);
  // After a server restart: every known worker gets a fresh lease from now, so live workers keep
  // their jobs if they heartbeat in time and dead ones are dropped one lease later.
  absl::Status RenewAll(absl::Time now, absl::Duration lease);

  // Worker id → owning identity (worker_ownership.h), persisted apart from the leases.
  absl::StatusOr<std::map<std::string, std::string>> LoadIdentities();
  // Binds `id` to `identity` unless it is bound already; returns the identity it is bound to.
  absl::StatusOr<std::string> BindIdentity(const std::string& id, const std::string& identity, absl::Time now);
  absl::Status ForgetIdentity(const std::string& id);

 private:
  SqliteDb* db_;
};

}  // namespace mq::server
