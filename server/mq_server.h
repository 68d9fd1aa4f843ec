// mq-server as an object: opens the store, wires stores, registry, scheduler and services, serves
// gRPC and metrics, and drains on Shutdown(). main.cc only parses flags and waits for a signal.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/server.h>
#include <prometheus/exposer.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "artifact_validation.h"
#include "auth.h"
#include "token_store.h"
#include "blob_store.h"
#include "credentials.h"
#include "inference_service.h"
#include "job_event_hub.h"
#include "job_service.h"
#include "job_store.h"
#include "inference_router.h"
#include "cluster_service.h"
#include "kserve_service.h"
#include "process_collector.h"
#include "registry.h"
#include "registry_collector.h"
#include "registry_service.h"
#include "scheduler.h"
#include "server_metrics.h"
#include "sqlite_db.h"
#include "upload_manager.h"
#include "worker_service.h"
#include "worker_store.h"

namespace mq::server {

struct ServerOptions {
  std::string listen = "0.0.0.0:7070";
  std::string metrics_listen;  // empty: no metrics endpoint
  std::string health_listen;   // empty: none; else plaintext gRPC health alone (for kubelet probes)
  std::string data_dir = "./mq-data";
  ServerTlsOptions tls;        // tls.insecure also disables authentication
  // Bearer tokens: the tokens file (token_store.h) and the shorthand flags --token (an admin
  // token) and --worker-token (a worker token). At least one is needed unless insecure.
  std::string tokens_file;
  std::string client_token;
  std::string worker_token;
  // The worker API's own port, mutual TLS with client certificates signed by worker_ca (the
  // public port then refuses the worker API). Empty: workers use the public port with a token.
  std::string worker_listen;
  std::string worker_ca;
  absl::Duration lease = absl::Seconds(15);
  int max_attempts = 3;
  int64_t max_queued_jobs = 10000;
  absl::Duration drain_timeout = absl::Seconds(20);
  UploadLimits limits;
};

class MqServer {
 public:
  static absl::StatusOr<std::unique_ptr<MqServer>> Start(const ServerOptions& options);
  ~MqServer();

  // Stops taking work, ends streams and long polls, waits up to drain_timeout for in-flight
  // calls, then stops. Idempotent.
  void Shutdown();
  int port() const { return port_; }
  int health_port() const { return health_port_; }
  int worker_port() const { return worker_port_; }
  // Re-reads the tokens file (SIGHUP). On error the previous tokens stay in force.
  absl::Status ReloadTokens();

 private:
  explicit MqServer(const ServerOptions& options) : options_(options) {}
  absl::Status Init();

  ServerOptions options_;
  int port_ = 0;
  int health_port_ = 0;
  int worker_port_ = 0;
  std::unique_ptr<TokenStore> tokens_;  // null when insecure
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<JobStore> jobs_;
  std::unique_ptr<WorkerStore> workers_;
  std::unique_ptr<RegistryStore> registry_store_;
  std::unique_ptr<UploadManager> uploads_;
  std::unique_ptr<Registry> registry_;
  std::unique_ptr<JobEventHub> hub_;
  std::unique_ptr<ServerMetrics> metrics_;
  std::unique_ptr<Scheduler> scheduler_;
  std::unique_ptr<Authenticator> auth_;
  std::unique_ptr<RegistryServiceImpl> registry_service_;
  std::unique_ptr<JobServiceImpl> job_service_;
  std::unique_ptr<WorkerServiceImpl> worker_service_;
  std::unique_ptr<InferenceServiceImpl> inference_service_;
  std::unique_ptr<InferenceRouter> router_;  // before the services that use it
  std::unique_ptr<KServeServiceImpl> kserve_service_;
  std::unique_ptr<ClusterServiceImpl> cluster_service_;  // mqctl workers list / server status  // inference.GRPCInferenceService (KServe v2)
  std::shared_ptr<RegistryCollector> registry_collector_;  // the exposer holds weak pointers
  std::shared_ptr<ProcessCollector> process_collector_;
  std::unique_ptr<prometheus::Exposer> exposer_;
  std::unique_ptr<grpc::Server> server_;
  std::unique_ptr<grpc::Server> health_server_;  // --health-listen
  bool shut_down_ = false;
};

}  // namespace mq::server
