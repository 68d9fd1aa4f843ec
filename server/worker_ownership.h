// Per-worker identity: which caller (a client certificate's name on the mTLS worker port, or a
// named worker token) owns each worker id. A worker id is bound to the identity that registered
// it; every later call naming that id (heartbeats, job pulls, progress, results, the Serve
// stream) must come from the same identity, else PERMISSION_DENIED. So holding some worker
// credential does not let a caller act as, or finish the jobs of, another worker.
//
// Bindings are persisted (WorkerStore's worker_identities table) before they take effect, so a
// restarted server still refuses another identity claiming a bound id; a binding ends with
// Deregister. Give each worker its own certificate or token: workers sharing one credential share
// one identity.
#pragma once

#include <map>
#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "worker_store.h"

namespace mq::server {

class WorkerOwnership {
 public:
  // enabled=false (insecure server): every check passes, nothing is bound. `store` null keeps
  // the bindings in memory only (tests of the checks alone).
  WorkerOwnership(bool enabled, WorkerStore* store) : enabled_(enabled), store_(store) {}

  // OK when `worker_id` is unbound (it becomes `identity`'s, durably) or already `identity`'s.
  // A store error refuses the call (with that error): no binding is granted that a restart would lose.
  absl::Status Claim(const std::string& worker_id, const std::string& identity);
  // OK when `identity` owns at least one worker id (reads not tied to a worker id).
  absl::Status CheckAnyWorker(const std::string& identity) const;
  void Forget(const std::string& worker_id);

 private:
  // Reads the persisted bindings on first use (the constructor cannot fail).
  absl::Status LoadLocked() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const bool enabled_;
  WorkerStore* const store_;
  mutable absl::Mutex mu_;
  mutable bool loaded_ ABSL_GUARDED_BY(mu_) = false;
  mutable std::map<std::string, std::string> owner_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
