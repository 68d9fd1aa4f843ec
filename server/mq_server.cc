#include "mq_server.h"

#include "engine_model_check.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "log.h"
#include "rpc_metrics_interceptor.h"
#include "schema_migrations.h"

namespace mq::server {

absl::StatusOr<std::unique_ptr<MqServer>> MqServer::Start(const ServerOptions& options) {
  std::unique_ptr<MqServer> server(new MqServer(options));
  absl::Status s = server->Init();
  if (!s.ok()) return s;
  return server;
}

absl::Status MqServer::Init() {
  absl::Status s = MakeDirs(options_.data_dir);
  if (!s.ok()) return s;
  auto db = SqliteDb::Open(JoinPath(options_.data_dir, "mq.db"));
  if (!db.ok()) return db.status();
  db_ = *std::move(db);
  s = MigrateSchema(*db_);
  if (!s.ok()) return s;
  auto blobs = BlobStore::Open(options_.data_dir);
  if (!blobs.ok()) return blobs.status();
  blobs_ = *std::move(blobs);

  jobs_ = std::make_unique<JobStore>(db_.get());
  workers_ = std::make_unique<WorkerStore>(db_.get());
  registry_store_ = std::make_unique<RegistryStore>(db_.get());
  uploads_ = std::make_unique<UploadManager>(registry_store_.get(), blobs_.get(), options_.limits);
  // Model content hook: structural checks only for now; the engine's loaders can be plugged in
  // here to open uploaded models before they are accepted.
  registry_ = std::make_unique<Registry>(registry_store_.get(), blobs_.get(), uploads_.get(), CheckModelWithEngine);
  hub_ = std::make_unique<JobEventHub>();
  metrics_ = std::make_unique<ServerMetrics>();

  // Workers known before a restart get a fresh lease (two lease lengths, time to reconnect): live
  // ones keep their jobs by heartbeating in time, dead ones expire and their jobs are requeued.
  s = workers_->RenewAll(absl::Now(), 2 * options_.lease);
  if (!s.ok()) return s;

  SchedulerOptions sched;
  sched.lease = options_.lease;
  sched.max_attempts = options_.max_attempts;
  scheduler_ = std::make_unique<Scheduler>(jobs_.get(), workers_.get(), registry_.get(), uploads_.get(), hub_.get(),
                                           metrics_.get(), sched);

  const bool authenticate = !options_.tls.insecure;
  std::string worker_token = options_.worker_token.empty() ? options_.client_token : options_.worker_token;
  if (authenticate && options_.client_token.empty()) {
    return absl::InvalidArgumentError("a token is required unless --insecure: set --token, --token-file or MQ_TOKEN");
  }
  auth_ = std::make_unique<Authenticator>(authenticate, options_.client_token, worker_token);

  ServiceDeps deps;
  deps.auth = auth_.get();
  deps.registry = registry_.get();
  deps.registry_store = registry_store_.get();
  deps.uploads = uploads_.get();
  deps.jobs = jobs_.get();
  deps.workers = workers_.get();
  deps.scheduler = scheduler_.get();
  deps.hub = hub_.get();
  deps.metrics = metrics_.get();
  router_ = std::make_unique<InferenceRouter>(registry_.get(), workers_.get(), metrics_.get());
  deps.router = router_.get();
  deps.lease = options_.lease;
  deps.max_attempts = options_.max_attempts;
  deps.max_queued_jobs = options_.max_queued_jobs;
  registry_service_ = std::make_unique<RegistryServiceImpl>(deps);
  job_service_ = std::make_unique<JobServiceImpl>(deps);
  worker_service_ = std::make_unique<WorkerServiceImpl>(deps);
  inference_service_ = std::make_unique<InferenceServiceImpl>(deps);
  kserve_service_ = std::make_unique<KServeServiceImpl>(deps);
  cluster_service_ = std::make_unique<ClusterServiceImpl>(deps, absl::Now());

  auto creds = MakeServerCredentials(options_.tls);
  if (!creds.ok()) return creds.status();

  if (!options_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics-listen ", options_.metrics_listen, ": ", e.what()));
    }
    exposer_->RegisterCollectable(metrics_->registry());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, *creds, &port_);
  builder.SetMaxReceiveMessageSize(8 << 20);
  builder.SetMaxSendMessageSize(8 << 20);
  builder.RegisterService(registry_service_.get());
  builder.RegisterService(job_service_.get());
  builder.RegisterService(worker_service_.get());
  builder.RegisterService(inference_service_.get());
  builder.RegisterService(kserve_service_.get());
  builder.RegisterService(cluster_service_.get());
  std::vector<std::unique_ptr<grpc::experimental::ServerInterceptorFactoryInterface>> interceptors;
  interceptors.push_back(std::make_unique<RpcMetricsInterceptorFactory>(metrics_.get()));
  builder.experimental().SetInterceptorCreators(std::move(interceptors));
  server_ = builder.BuildAndStart();
  if (server_ == nullptr || port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.listen));
  }
  // --health-listen: gRPC health alone, in plaintext, for probes that cannot speak TLS (the
  // kubelet's). It carries no API and mirrors the API port's health.
  if (!options_.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    health_builder.AddListeningPort(options_.health_listen, grpc::InsecureServerCredentials(), &health_port_);
    health_server_ = health_builder.BuildAndStart();
    if (health_server_ == nullptr || health_port_ == 0) {
      return absl::UnavailableError(absl::StrCat("cannot listen on --health-listen ", options_.health_listen));
    }
  }
  // Health per service: the inference services serve only while some worker can take a call
  // (the process's own health, service "", stays SERVING; it turns NOT_SERVING when draining).
  router_->SetWorkersListener([this](bool any_worker) {
    for (grpc::Server* s : {server_.get(), health_server_.get()}) {
      auto* health = s != nullptr ? s->GetHealthCheckService() : nullptr;
      if (health == nullptr) continue;
      for (const char* service : {"mambaquant.v1.InferenceService", "inference.GRPCInferenceService"})
        health->SetServingStatus(service, any_worker);
    }
  });
  scheduler_->Start();
  Log(LogLevel::kInfo, "mq-server started")
      .Kv("listen", options_.listen).Kv("port", port_).Kv("metrics", options_.metrics_listen)
      .Kv("data_dir", options_.data_dir).Kv("tls", !options_.tls.insecure).Kv("lease_s", absl::ToInt64Seconds(options_.lease));
  return absl::OkStatus();
}

void MqServer::Shutdown() {
  if (shut_down_) return;
  shut_down_ = true;
  Log(LogLevel::kInfo, "draining");
  if (router_ != nullptr) router_->SetWorkersListener(nullptr);  // draining: health stays NOT_SERVING
  if (server_ != nullptr) {
    if (auto* health = server_->GetHealthCheckService()) health->Shutdown();  // NOT_SERVING
  }
  if (health_server_ != nullptr) {
    if (auto* health = health_server_->GetHealthCheckService()) health->Shutdown();
  }
  // Long polls get "no job" and watch streams end; unary calls in flight finish normally.
  if (scheduler_ != nullptr) scheduler_->Stop();
  if (hub_ != nullptr) hub_->Shutdown();
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(absl::Now() + options_.drain_timeout));
    server_->Wait();
  }
  if (health_server_ != nullptr) health_server_->Shutdown(absl::ToChronoTime(absl::Now()));
  exposer_.reset();
  Log(LogLevel::kInfo, "mq-server stopped");
}

MqServer::~MqServer() { Shutdown(); }

}  // namespace mq::server
