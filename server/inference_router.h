// Routes inference calls (Generate, Score, the KServe v2 protocol) to workers over their Serve
// streams, and keeps the server's view of which worker holds which model.
//
// Routing: a live worker (its Serve stream open, its lease valid) that has the model loaded, least
// loaded first (running + waiting sequences); else one that can load it (the fewest loaded models);
// UNAVAILABLE when no worker is connected. Workers load models on first use and unload the least
// recently used within their memory budget; the server only learns what they hold (WorkerLoad).
//
// Threading: Start/Cancel run on gRPC threads; observers are called on the worker stream's reactor
// threads and must not block.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "mambaquant/v1/worker.pb.h"

namespace mq::server {

class Registry;
class WorkerStore;
class ServerMetrics;

// The events of one call.
class InferenceCallObserver {
 public:
  virtual ~InferenceCallObserver() = default;
  // A generate or score event of the call (never an error event). May come before Start returns.
  virtual void OnEvent(const mambaquant::v1::InferenceEvent& event) = 0;
  // Exactly once, after the last event: OK when the worker finished the call, else why not
  // (the worker's error, CANCELLED after Cancel, UNAVAILABLE when the worker's stream broke).
  virtual void OnDone(const absl::Status& status) = 0;
};

// One worker's Serve stream as the router sees it (implemented by the stream's reactor).
class WorkerStreamSink {
 public:
  virtual ~WorkerStreamSink() = default;
  // Queues a message to the worker; false when the stream is closing.
  virtual bool Send(const mambaquant::v1::ServeDown& message) = 0;
  // Ends the stream (OK) once the messages queued are written; the router hears of it through
  // DetachWorker, as for any stream that ends. Never calls back into the router.
  virtual void CloseStream() = 0;
};

struct ModelAvailability {
  std::string model;        // "name:version"
  std::vector<std::string> workers;  // ids of workers that have it loaded
  bool loading = false;     // some worker is loading it
};

class InferenceRouter {
 public:
  InferenceRouter(Registry* registry, WorkerStore* workers, ServerMetrics* metrics);
  ~InferenceRouter();

  // Starts a call. `call.model` is a reference ("name" or "name:version"): it is resolved in the
  // registry (NOT_FOUND), and the call is sent with the resolved model and its files. Request
  // limits the chosen worker advertised (WorkerCapacity) are checked here (INVALID_ARGUMENT naming
  // the limit). Returns the call id; afterwards exactly one observer->OnDone follows.
  absl::StatusOr<std::string> Start(mambaquant::v1::InferenceCall call, std::shared_ptr<InferenceCallObserver> observer);
  // Asks the worker to drop the call; OnDone(CANCELLED) follows once it confirms (or at once when
  // the worker is gone). Unknown ids are ignored.
  void Cancel(const std::string& call_id);

  // Repository control (KServe RepositoryModelLoad / Unload): `done` runs once with the outcome.
  // Load picks a worker like Start does; Unload asks every worker holding the model.
  absl::Status LoadModel(const std::string& model_ref, std::function<void(absl::Status)> done);
  absl::Status UnloadModel(const std::string& model_ref, std::function<void(absl::Status)> done);
  // Unload of a resolved "name:version" without asking the registry: a version just deleted
  // (DeleteArtifact) or no longer registered that workers still hold.
  void UnloadResolved(const std::string& model, std::function<void(absl::Status)> done);
  // Resolved "name:version" → where it is loaded. Only models some worker holds or loads.
  std::vector<ModelAvailability> Availability();
  // Whether a live worker has this resolved model loaded.
  bool ModelReady(const std::string& resolved_model);
  // Whether any live worker is connected for inference.
  bool AnyWorker();
  // The workers connected for inference: what each advertised and its latest load report.
  struct WorkerServing {
    mambaquant::v1::WorkerCapacity capacity;
    mambaquant::v1::WorkerLoad load;
  };
  std::map<std::string, WorkerServing> ConnectedWorkers();
  // Runs (outside the router's lock) whenever the answer of AnyWorker may have changed: health.
  void SetWorkersListener(std::function<void(bool any_worker)> listener);
  // Server shutdown: refuses new calls and workers (UNAVAILABLE), waits until the calls in flight
  // have ended or `deadline` passes, then closes every worker's stream (cutting what still runs).
  // Without it an idle worker's open stream held the shutdown for its whole drain timeout.
  void Drain(absl::Time deadline);

  // --- The worker side (WorkerService.Serve). ---
  // The worker's hello: attaches its stream. A second stream of the same worker replaces the first.
  absl::Status AttachWorker(const mambaquant::v1::ServeHello& hello, WorkerStreamSink* sink);
  // An event or a load report from the worker.
  void OnWorkerEvent(const std::string& worker_id, const mambaquant::v1::InferenceEvent& event);
  void OnWorkerLoad(const std::string& worker_id, const mambaquant::v1::WorkerLoad& load);
  // The stream ended: every call in flight on it ends with UNAVAILABLE.
  void DetachWorker(const std::string& worker_id, WorkerStreamSink* sink);

 private:
  struct Worker;
  struct Call;
  absl::StatusOr<Worker*> PickWorker(const std::string& model, int32_t sequences) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void UpdateLoadLocked(Worker& w, const mambaquant::v1::WorkerLoad& load) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  Registry* registry_;
  WorkerStore* workers_;
  ServerMetrics* metrics_;
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<Worker>> worker_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, std::shared_ptr<Call>> calls_ ABSL_GUARDED_BY(mu_);
  uint64_t next_call_ ABSL_GUARDED_BY(mu_) = 0;
  std::function<void(bool)> workers_listener_ ABSL_GUARDED_BY(mu_);
  bool draining_ ABSL_GUARDED_BY(mu_) = false;
  void NotifyWorkers();
};

}  // namespace mq::server
