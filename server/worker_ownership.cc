#include "worker_ownership.h"

#include "absl/strings/str_cat.h"

namespace mq::server {

absl::Status WorkerOwnership::Claim(const std::string& worker_id, const std::string& identity) {
  if (!enabled_) return absl::OkStatus();
  if (identity.empty()) return absl::PermissionDeniedError("the call carries no worker identity");
  absl::MutexLock lock(&mu_);
  auto [it, inserted] = owner_.emplace(worker_id, identity);
  if (!inserted && it->second != identity) {
    return absl::PermissionDeniedError(absl::StrCat("worker ", worker_id, " belongs to another worker identity"));
  }
  return absl::OkStatus();
}

absl::Status WorkerOwnership::CheckAnyWorker(const std::string& identity) const {
  if (!enabled_) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (!identity.empty()) {
    for (const auto& [id, owner] : owner_) {
      if (owner == identity) return absl::OkStatus();
    }
  }
  return absl::PermissionDeniedError("the caller has no registered worker");
}

void WorkerOwnership::Forget(const std::string& worker_id) {
  if (!enabled_) return;
  absl::MutexLock lock(&mu_);
  owner_.erase(worker_id);
}

}  // namespace mq::server
