// The models this worker serves: each loaded text model is a ServingEngine (its weights, state
// slots and batch buffers allocated once at load), each Vision Mamba model (config.json
// `model_type: vim`) a ClassifierRunner. Models load on first use, from the blob cache, and
// stay loaded within a memory budget; loading one that does not fit first unloads the least
// recently used idle models (no running or waiting sequences). A model never unloads under a
// running call except by an explicit Unload, which ends its calls with CANCELLED.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blob_cache.h"
#include "classifier_runner.h"
#include "mambaquant/v1/worker.pb.h"
#include "serve/backend_plugin.h"
#include "serve/serving_engine.h"
#include "server_connection.h"
#include "worker_metrics.h"

namespace mq::worker {

struct ModelHostOptions {
  serve::ServingOptions serving;
  uint64_t memory_budget_bytes = 0;   // 0: no budget
  std::string models_dir;             // per-model directories of links into the blob cache
  const serve::BackendPlugin* plugin = nullptr;  // null: the CPU reference backend
  WorkerMetrics* metrics = nullptr;              // optional: decode-step metrics
};

// A loaded model: exactly one of engine (text) and classifier (Vim) is set.
struct HostedModel {
  std::shared_ptr<serve::ServingEngine> engine;
  std::shared_ptr<ClassifierRunner> classifier;
  uint64_t bytes = 0;  // what it holds, counted in the memory budget
};

class ModelHost {
 public:
  using Ready = std::function<void(absl::StatusOr<HostedModel>)>;

  ModelHost(ModelHostOptions options, BlobCache* cache, const ServerConnection* server);
  // Shutdown().
  ~ModelHost();
  // Waits for the loads in flight (their callbacks run), then unloads every model: their calls end
  // with CANCELLED, and no engine calls a sink afterwards. Later Acquires fail with UNAVAILABLE.
  void Shutdown();

  // Calls `ready` with `model` ("name:version"): at once (on this thread) when it is
  // loaded, else from a loader thread once it is (one load per model however many ask).
  void Acquire(const std::string& model, const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files,
               Ready ready);
  // Unloads `model` now. NOT_FOUND when it is not loaded.
  absl::Status Unload(const std::string& model);
  // What is loaded, for the server (WorkerLoad) and metrics.
  mambaquant::v1::WorkerLoad Snapshot() const;
  // Runs after every completed load or unload (the stream reports the new state at once).
  void SetChangeListener(std::function<void()> listener);
  const ModelHostOptions& options() const { return options_; }
  // The device the models compute on: "cuda" with a plugin, else "cpu".
  std::string device() const { return options_.plugin != nullptr ? "cuda" : "cpu"; }

 private:
  struct Entry {
    HostedModel model;
    uint64_t last_used = 0;  // use counter, for LRU
    std::string content;     // ContentKey of the files it was loaded from
  };
  // What a model's files are (each path with its SHA-256): a name:version deleted and registered
  // again with other files is another model, whatever the name says.
  static std::string ContentKey(const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files);
  struct Loading {
    std::vector<Ready> waiters;
  };
  absl::StatusOr<HostedModel> LoadModel(const std::string& model,
                                        const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files);
  // The Vim branch of LoadModel: `dir` holds the materialized model.
  absl::StatusOr<HostedModel> LoadClassifier(const std::string& dir, uint64_t file_bytes);
  // Unloads idle models, least recently used first, until `need` more bytes fit the budget.
  absl::Status MakeRoom(uint64_t need);
  void Changed();

  const ModelHostOptions options_;
  BlobCache* cache_;
  const ServerConnection* server_;

  mutable std::mutex mu_;  // guards the fields below
  std::map<std::string, Entry> loaded_;
  std::map<std::string, Loading> loading_;
  uint64_t use_counter_ = 0;
  int active_loaders_ = 0;  // detached loader threads still running
  bool shut_down_ = false;
  std::condition_variable loaders_done_;
  std::function<void()> listener_;
};

}  // namespace mq::worker
