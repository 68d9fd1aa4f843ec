// Per-worker identity: which caller (a client certificate's name on the mTLS worker port, or a
// named worker token) owns each worker id. A worker id is bound to the identity that registered
// it; every later call naming that id (heartbeats, job pulls, progress, results, the Serve
// stream) must come from the same identity, else PERMISSION_DENIED. So holding some worker
// credential does not let a caller act as, or finish the jobs of, another worker.
//
// Bindings live in memory. After a server restart a worker id is bound again by the first call
// naming it (workers keep their id and heartbeat within a lease). Give each worker its own
// certificate or token: workers sharing one credential share one identity.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"

namespace mq::server {

class WorkerOwnership {
 public:
  // enabled=false (insecure server): every check passes, nothing is bound.
  explicit WorkerOwnership(bool enabled) : enabled_(enabled) {}

  // OK when `worker_id` is unbound (it becomes `identity`'s) or already `identity`'s.
  absl::Status Claim(const std::string& worker_id, const std::string& identity);
  // OK when `identity` owns at least one worker id (reads not tied to a worker id).
  absl::Status CheckAnyWorker(const std::string& identity) const;
  void Forget(const std::string& worker_id);

 private:
  const bool enabled_;
  mutable absl::Mutex mu_;
  std::map<std::string, std::string> owner_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
