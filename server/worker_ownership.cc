#include "worker_ownership.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "log.h"

namespace mq::server {

absl::Status WorkerOwnership::LoadLocked() const {
  if (loaded_ || store_ == nullptr) return absl::OkStatus();
  auto stored = store_->LoadIdentities();
  if (!stored.ok()) return stored.status();
  // Bindings made in memory before the load (none in the server) win over nothing: merge.
  for (auto& [id, identity] : *stored) owner_.emplace(id, std::move(identity));
  loaded_ = true;
  return absl::OkStatus();
}

absl::Status WorkerOwnership::Claim(const std::string& worker_id, const std::string& identity) {
  if (!enabled_) return absl::OkStatus();
  if (identity.empty()) return absl::PermissionDeniedError("the call carries no worker identity");
  absl::MutexLock lock(&mu_);
  if (absl::Status s = LoadLocked(); !s.ok()) return s;
  auto it = owner_.find(worker_id);
  if (it == owner_.end()) {
    std::string bound = identity;
    if (store_ != nullptr) {
      auto persisted = store_->BindIdentity(worker_id, identity, absl::Now());
      if (!persisted.ok()) return persisted.status();
      bound = *std::move(persisted);
    }
    it = owner_.emplace(worker_id, std::move(bound)).first;
  }
  if (it->second != identity) {
    return absl::PermissionDeniedError(absl::StrCat("worker ", worker_id, " belongs to another worker identity"));
  }
  return absl::OkStatus();
}

absl::Status WorkerOwnership::CheckAnyWorker(const std::string& identity) const {
  if (!enabled_) return absl::OkStatus();
  absl::MutexLock lock(&mu_);
  if (absl::Status s = LoadLocked(); !s.ok()) return s;
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
  if (store_ == nullptr) return;
  // The binding outlives a failed delete: the same identity can still use the id; log it.
  if (absl::Status s = store_->ForgetIdentity(worker_id); !s.ok())
    mq::Log(mq::LogLevel::kWarning, "worker identity binding not removed").Kv("worker", worker_id).Kv("error", s.ToString());
}

}  // namespace mq::server
