#include "mq_server.h"

#include "engine_model_check.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server_builder.h>

#include "absl/strings/str_cat.h"
#include "log.h"
#include "grpc_limits.h"
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

  if (options_.tls.insecure) {
    // Honouring a token over plaintext would send it in the clear; ignoring it silently would
    // leave an operator believing the server is protected. Refuse the combination.
    if (!options_.tokens_file.empty() || !options_.client_token.empty() || !options_.worker_token.empty()) {
      return absl::InvalidArgumentError("--insecure disables authentication: drop --token, --worker-token and --tokens-file (or drop --insecure)");
    }
    if (!options_.worker_ca.empty()) return absl::InvalidArgumentError("--worker-ca needs TLS: drop --insecure");
  } else {
    std::vector<TokenEntry> fixed;
    if (!options_.client_token.empty()) fixed.push_back(EntryForSecret(options_.client_token, Role::kAdmin, "flag-token"));
    if (!options_.worker_token.empty()) fixed.push_back(EntryForSecret(options_.worker_token, Role::kWorker, "flag-worker-token"));
    if (fixed.empty() && options_.tokens_file.empty()) {
      return absl::InvalidArgumentError("a token is required unless --insecure: set --tokens-file, --token (or --token-file, MQ_TOKEN)");
    }
    if (options_.worker_token.empty() && options_.tokens_file.empty() && options_.worker_listen.empty()) {
      // --token is an admin token only (it no longer doubles as the worker token).
      Log(LogLevel::kWarning, "no worker credential: workers need --worker-token, a worker token in --tokens-file, or --worker-listen with certificates");
    }
    auto tokens = TokenStore::Create(options_.tokens_file, std::move(fixed));
    if (!tokens.ok()) return tokens.status();
    tokens_ = *std::move(tokens);
    if (!options_.worker_listen.empty() && options_.worker_ca.empty()) {
      return absl::InvalidArgumentError("--worker-listen needs --worker-ca (the CA that signs worker certificates)");
    }
  }
  auth_ = std::make_unique<Authenticator>(tokens_.get());

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
  const bool worker_port = !options_.worker_listen.empty();
  std::shared_ptr<grpc::ServerCredentials> worker_creds;
  if (worker_port) {
    ServerTlsOptions worker_tls = options_.tls;
    worker_tls.client_ca_file = options_.worker_ca;
    auto wc = MakeServerCredentials(worker_tls);
    if (!wc.ok()) return wc.status();
    worker_creds = *std::move(wc);
  }
  if (auth_->enabled()) {
    // Every call on either port passes its processor before any handler runs.
    (*creds)->SetAuthMetadataProcessor(auth_->PublicPortProcessor(/*worker_api_here=*/!worker_port));
    if (worker_port) worker_creds->SetAuthMetadataProcessor(auth_->WorkerPortProcessor());
  } else {
    Log(LogLevel::kWarning, "--insecure: plaintext and no authentication; anyone who reaches the port may do anything");
  }

  if (!options_.metrics_listen.empty()) {
    try {
      exposer_ = std::make_unique<prometheus::Exposer>(options_.metrics_listen);
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat("--metrics-listen ", options_.metrics_listen, ": ", e.what()));
    }
    exposer_->RegisterCollectable(metrics_->registry());
    registry_collector_ = std::make_shared<RegistryCollector>(db_.get(), blobs_.get());
    exposer_->RegisterCollectable(registry_collector_);
    process_collector_ = std::make_shared<ProcessCollector>();
    exposer_->RegisterCollectable(process_collector_);
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(options_.listen, *creds, &port_);
  if (worker_port) builder.AddListeningPort(options_.worker_listen, worker_creds, &worker_port_);
  ApplyServerLimits(&builder);
  // A fixed HTTP/2 receive window instead of the bandwidth-delay probe: the probe grows a fast
  // stream's window to tens of MB, all of which is buffered in the server whenever the handler
  // (writing an upload to disk) falls behind the socket — measured 70–100 MB of RSS for one 1 GiB
  // upload on a loaded 2-core machine. 8 MiB a stream still carries 160 MB/s at 50 ms RTT.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
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
  if (worker_port && worker_port_ == 0) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", options_.worker_listen));
  }
  // --health-listen: gRPC health alone, in plaintext, for probes that cannot speak TLS (the
  // kubelet's). It carries no API and mirrors the API port's health.
  if (!options_.health_listen.empty()) {
    grpc::ServerBuilder health_builder;
    ApplyServerLimits(&health_builder);
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
      .Kv("data_dir", options_.data_dir).Kv("tls", !options_.tls.insecure).Kv("lease_s", absl::ToInt64Seconds(options_.lease))
      .Kv("worker_port", worker_port_).Kv("tokens", tokens_ != nullptr ? static_cast<int64_t>(tokens_->size()) : 0);
  return absl::OkStatus();
}

absl::Status MqServer::ReloadTokens() {
  if (tokens_ == nullptr) return absl::FailedPreconditionError("no tokens (--insecure)");
  absl::Status s = tokens_->Reload();
  if (!s.ok()) {
    Log(LogLevel::kError, "tokens file reload failed; the previous tokens stay in force").Kv("file", tokens_->path()).Kv("error", s);
    return s;
  }
  Log(LogLevel::kInfo, "tokens reloaded").Kv("file", tokens_->path()).Kv("tokens", static_cast<int64_t>(tokens_->size()));
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
  const absl::Time deadline = absl::Now() + options_.drain_timeout;
  // Inference calls in flight finish (up to the deadline), then the workers' streams close: an
  // idle worker's open stream would otherwise hold server_->Shutdown until the deadline.
  if (router_ != nullptr) router_->Drain(deadline);
  if (server_ != nullptr) {
    server_->Shutdown(absl::ToChronoTime(deadline));
    server_->Wait();
  }
  if (health_server_ != nullptr) health_server_->Shutdown(absl::ToChronoTime(absl::Now()));
  exposer_.reset();
  Log(LogLevel::kInfo, "mq-server stopped");
}

MqServer::~MqServer() { Shutdown(); }

}  // namespace mq::server
