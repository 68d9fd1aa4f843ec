// mq-worker: runs quantization jobs for an mq-server. See docs/deploy.md for the flags.
#include <signal.h>
#include <unistd.h>

#include <atomic>

#include <cstdio>
#include <memory>
#include <string>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/health_check_service_interface.h>
#include <grpcpp/server.h>
#include <grpcpp/server_builder.h>
#include <prometheus/exposer.h>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "backend_plugin_loader.h"
#include "blob_cache.h"
#include "credentials.h"
#include "flag_names.h"
#include "device_info.h"
#include "file_util.h"
#include "grpc_limits.h"
#include "inference_stream.h"
#include "log.h"
#include "model_host.h"
#include "quantize_executor.h"
#include "serving_collector.h"
#include "device_memory_collector.h"
#include "process_collector.h"
#include "shutdown_signal.h"
#include "worker_agent.h"
#include "worker_metrics.h"

ABSL_FLAG(std::string, server, "localhost:7070", "mq-server address host:port");
ABSL_FLAG(std::string, listen, "0.0.0.0:7071", "Where this worker serves gRPC health and reflection");
ABSL_FLAG(std::string, metrics_listen, "", "Prometheus /metrics listen address host:port (empty: off)");
ABSL_FLAG(std::string, backend, "auto",
          "cpu | cuda | auto (cuda when the CUDA backend plugin loads and finds a usable GPU, else cpu)");
ABSL_FLAG(std::string, backend_plugin, "",
          "The CUDA backend plugin (default: libmq_cuda_backend.so next to mq-worker, then in ../lib/)");
ABSL_FLAG(std::string, cache_dir, "./mq-worker-cache", "Blob cache and job work directories");
ABSL_FLAG(int64_t, cache_max_bytes, int64_t{50} << 30, "Evict cached blobs beyond this size (0: never)");
ABSL_FLAG(int, max_jobs, 1, "Jobs run at once");
ABSL_FLAG(std::string, name, "", "Worker name shown by the server (default: host name)");
ABSL_FLAG(std::string, device_name, "", "Override the advertised device name");
ABSL_FLAG(bool, insecure, false, "Plaintext to the server without a token (local development only)");
ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle to verify the server (default: system roots)");
ABSL_FLAG(std::string, tls_server_name, "", "Override the name checked in the server certificate");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate for this worker's own --listen endpoint (plaintext when empty)");
ABSL_FLAG(std::string, tls_key, "", "PEM key for this worker's own --listen endpoint");
ABSL_FLAG(std::string, client_cert, "", "PEM certificate this worker presents to the server's mutual-TLS worker port (with --client-key; no token needed then)");
ABSL_FLAG(std::string, client_key, "", "PEM private key of --client-cert");
ABSL_FLAG(std::string, token, "", "Worker bearer token (else --token-file, $MQ_WORKER_TOKEN, $MQ_TOKEN)");
ABSL_FLAG(std::string, token_file, "", "File holding the worker bearer token");
ABSL_FLAG(int, poll_seconds, 20, "Long-poll wait for a job, seconds");
ABSL_FLAG(int, drain_seconds, 20,
          "On SIGTERM, how long inference calls in flight may take to finish (no new ones are routed here meanwhile)");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warn | error");
ABSL_FLAG(std::string, log_format, "text", "text (key=value) | json (one JSON object per line)");
// Inference serving (per loaded model; everything is allocated when the model loads).
ABSL_FLAG(int, max_sequences, 64, "Sequences decoded at once per model (recurrent-state slots)");
ABSL_FLAG(int, max_batch, 0, "Sequences of one decode step (0: --max-sequences)");
ABSL_FLAG(int, prefill_chunk, 256, "Prompt tokens per prefill chunk (a long prompt stalls running streams at most this long)");
ABSL_FLAG(std::string, state_dtype, "fp32",
          "Recurrent-state cache storage: fp32 (exact), fp16, bf16 or int8 (rounded at every store; less memory and "
          "decode traffic, docs/quantization.md)");
ABSL_FLAG(int, max_waiting, 256, "Calls queued per model beyond the running ones (RESOURCE_EXHAUSTED past it)");
ABSL_FLAG(int, max_prompt_tokens, 8192, "Longest prompt, tokens");
ABSL_FLAG(int, max_new_tokens, 4096, "Most tokens one completion may generate (at most 4096)");
ABSL_FLAG(int, max_score_tokens, 8192, "Longest text Score accepts, tokens");
ABSL_FLAG(std::vector<std::string>, preload, {},
          "Models (name[:version], comma-separated) to load at start; the worker exits if one is unknown or does not "
          "fit (its state slots and buffers are allocated at load)");
ABSL_FLAG(int64_t, model_memory_budget, 0,
          "Bytes loaded models may hold (0: 90% of the device memory); least recently used idle models unload beyond it");

int main(int argc, char** argv) {
  mq::BlockShutdownSignals();
  absl::SetProgramUsageMessage("mq-worker --server ADDR --listen ADDR --backend cpu|cuda --cache-dir DIR [--insecure]");
  mq::DashedFlagArgs dashed(argc, argv);
  absl::ParseCommandLine(dashed.argc(), dashed.argv());
  mq::SetLogComponent("worker");
  mq::LogLevel level;
  if (!mq::ParseLogLevel(absl::GetFlag(FLAGS_log_level), &level)) {
    std::fprintf(stderr, "--log-level must be debug, info, warn or error\n");
    return 2;
  }
  mq::SetLogLevel(level);
  mq::LogFormat log_format;
  if (!mq::ParseLogFormat(absl::GetFlag(FLAGS_log_format), &log_format)) {
    std::fprintf(stderr, "--log-format must be text or json\n");
    return 2;
  }
  mq::SetLogFormat(log_format);
  mq::RouteProtobufLogs();

  // ---- The device backend. ----
  // `plugin` is the CUDA backend (serve/backend_plugin.h), loaded with dlopen and probed; null
  // when the worker computes on the CPU. Everything that computes (quantization jobs, inference
  // serving) takes its device from this pointer and nothing else: backend == "cuda" exactly when
  // plugin != null, so a worker never says cuda and computes on the CPU.
  std::string backend = absl::GetFlag(FLAGS_backend);
  if (backend != "cpu" && backend != "cuda" && backend != "auto") {
    std::fprintf(stderr, "--backend must be cpu, cuda or auto\n");
    return 2;
  }
  const mq::serve::BackendPlugin* plugin = nullptr;
  mq::serve::DeviceDescription gpu;
  if (backend != "cpu") {
    const std::string plugin_path = mq::worker::ResolveBackendPluginPath(absl::GetFlag(FLAGS_backend_plugin));
    auto loaded = mq::worker::LoadAndProbeBackendPlugin(plugin_path, &gpu);
    if (loaded.ok()) {
      plugin = *loaded;
      backend = "cuda";
    } else if (backend == "cuda") {
      std::fprintf(stderr, "--backend cuda: %s\n", loaded.status().ToString().c_str());
      return 2;
    } else {
      mq::Log(mq::LogLevel::kInfo, "CUDA backend not available; computing on the CPU")
          .Kv("plugin", plugin_path).Kv("reason", loaded.status());
      backend = "cpu";
    }
  }
  // ---- end of the device backend ----
  if (absl::GetFlag(FLAGS_max_jobs) < 1 || absl::GetFlag(FLAGS_max_jobs) > 64) {
    std::fprintf(stderr, "--max-jobs must be 1..64\n");
    return 2;
  }
  if (absl::GetFlag(FLAGS_poll_seconds) < 1 || absl::GetFlag(FLAGS_poll_seconds) > 60) {
    std::fprintf(stderr, "--poll-seconds must be 1..60, got %d\n", absl::GetFlag(FLAGS_poll_seconds));
    return 2;
  }
  if (absl::GetFlag(FLAGS_drain_seconds) < 0 || absl::GetFlag(FLAGS_drain_seconds) > 3600) {
    std::fprintf(stderr, "--drain-seconds must be 0..3600, got %d\n", absl::GetFlag(FLAGS_drain_seconds));
    return 2;
  }
  if (absl::GetFlag(FLAGS_cache_max_bytes) < 0) {
    std::fprintf(stderr, "--cache-max-bytes must be ≥ 0 (0: never evict), got %lld\n",
                 static_cast<long long>(absl::GetFlag(FLAGS_cache_max_bytes)));
    return 2;
  }

  // The connection to the server.
  mq::ClientTlsOptions tls;
  tls.insecure = absl::GetFlag(FLAGS_insecure);
  tls.ca_file = absl::GetFlag(FLAGS_tls_ca);
  tls.server_name_override = absl::GetFlag(FLAGS_tls_server_name);
  tls.client_cert_file = absl::GetFlag(FLAGS_client_cert);
  tls.client_key_file = absl::GetFlag(FLAGS_client_key);
  if (tls.insecure && !tls.client_cert_file.empty()) {
    std::fprintf(stderr, "--client-cert needs TLS: drop --insecure\n");
    return 2;
  }
  auto channel = mq::MakeChannel(absl::GetFlag(FLAGS_server), tls);
  if (!channel.ok()) {
    mq::Log(mq::LogLevel::kError, "cannot set up the server connection").Kv("error", channel.status());
    return 1;
  }
  mq::worker::ServerConnection server;
  server.channel = *channel;
  server.stub = mambaquant::v1::WorkerService::NewStub(server.channel);
  if (!tls.insecure) {
    auto token = mq::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file), "MQ_WORKER_TOKEN");
    if (token.ok() && token->empty()) token = mq::ResolveToken("", "", "MQ_TOKEN");
    // With a client certificate (the server's mTLS worker port) the certificate is the credential.
    const bool mutual_tls = !tls.client_cert_file.empty();
    if (!token.ok() || (token->empty() && !mutual_tls)) {
      mq::Log(mq::LogLevel::kError, "a worker token is required unless --insecure or --client-cert (--token, --token-file, MQ_WORKER_TOKEN or MQ_TOKEN)");
      return 2;
    }
    server.token = *token;
  }

  const std::string cache_dir = absl::GetFlag(FLAGS_cache_dir);
  auto cache = mq::worker::BlobCache::Open(mq::JoinPath(cache_dir, "blobs"), static_cast<uint64_t>(absl::GetFlag(FLAGS_cache_max_bytes)));
  if (!cache.ok()) {
    mq::Log(mq::LogLevel::kError, "cannot open the cache").Kv("error", cache.status());
    return 1;
  }

  mq::worker::WorkerMetrics metrics;
  std::unique_ptr<prometheus::Exposer> exposer;
  if (!absl::GetFlag(FLAGS_metrics_listen).empty()) {
    try {
      exposer = std::make_unique<prometheus::Exposer>(absl::GetFlag(FLAGS_metrics_listen));
      exposer->RegisterCollectable(metrics.registry());
    } catch (const std::exception& e) {
      mq::Log(mq::LogLevel::kError, "cannot serve metrics").Kv("error", e.what());
      return 1;
    }
  }

  // The worker's own endpoint serves only health and reflection: no job data passes through it.
  mq::ServerTlsOptions own_tls;
  own_tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  own_tls.key_file = absl::GetFlag(FLAGS_tls_key);
  own_tls.insecure = own_tls.cert_file.empty();
  auto own_creds = mq::MakeServerCredentials(own_tls);
  if (!own_creds.ok()) {
    mq::Log(mq::LogLevel::kError, "bad --tls-cert/--tls-key").Kv("error", own_creds.status());
    return 2;
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  mq::ApplyServerLimits(&builder);
  int port = 0;
  builder.AddListeningPort(absl::GetFlag(FLAGS_listen), *own_creds, &port);
  std::unique_ptr<grpc::Server> health_server = builder.BuildAndStart();
  if (health_server == nullptr || port == 0) {
    mq::Log(mq::LogLevel::kError, "cannot listen").Kv("listen", absl::GetFlag(FLAGS_listen));
    return 1;
  }

  // cuda: the device the plugin's probe found; cpu: /proc/cpuinfo and MemTotal.
  mq::worker::DeviceInfo device;
  if (plugin != nullptr) {
    device.name = gpu.name;
    device.memory_bytes = gpu.total_bytes;
  } else {
    device = mq::worker::DetectHostDevice();
  }
  if (!absl::GetFlag(FLAGS_device_name).empty()) device.name = absl::GetFlag(FLAGS_device_name);
  mq::worker::WorkerOptions options;
  options.name = absl::GetFlag(FLAGS_name);
  if (options.name.empty()) {
    char host[256] = {0};
    ::gethostname(host, sizeof host - 1);
    options.name = host;
  }
  options.address = absl::GetFlag(FLAGS_listen);
  options.backend = backend;
  options.device_name = device.name;
  options.memory_bytes = device.memory_bytes;
  options.max_jobs = absl::GetFlag(FLAGS_max_jobs);
  options.work_dir = mq::JoinPath(cache_dir, "jobs");
  options.poll_wait_seconds = absl::GetFlag(FLAGS_poll_seconds);

  // Inference: models load on first use into the ModelHost; calls arrive on the Serve stream.
  // Its options are checked here, before the worker registers, so a bad flag fails at once.
  mq::worker::ModelHostOptions host_options;
  mq::serve::ServingOptions& serving = host_options.serving;
  serving.backend.num_slots = absl::GetFlag(FLAGS_max_sequences);
  if (absl::GetFlag(FLAGS_max_batch) < 0) {
    std::fprintf(stderr, "serving flags: --max-batch must be ≥ 0 (0: --max-sequences), got %d\n", absl::GetFlag(FLAGS_max_batch));
    return 2;
  }
  serving.backend.max_batch = absl::GetFlag(FLAGS_max_batch) > 0 ? absl::GetFlag(FLAGS_max_batch) : serving.backend.num_slots;
  serving.backend.max_prefill_tokens = absl::GetFlag(FLAGS_prefill_chunk);
  serving.backend.max_logit_rows = std::min(serving.backend.max_prefill_tokens, 128);
  if (auto state_dtype = mq::ParseStateDtype(absl::GetFlag(FLAGS_state_dtype)); state_dtype.ok()) {
    serving.backend.state_dtype = *state_dtype;
  } else {
    std::fprintf(stderr, "serving flags: --state_dtype: %s\n", state_dtype.status().message().c_str());
    return 2;
  }
  serving.max_waiting = absl::GetFlag(FLAGS_max_waiting);
  serving.max_prompt_tokens = absl::GetFlag(FLAGS_max_prompt_tokens);
  serving.max_new_tokens = absl::GetFlag(FLAGS_max_new_tokens);
  serving.max_score_tokens = absl::GetFlag(FLAGS_max_score_tokens);
  if (mq::Status valid = mq::serve::ValidateServingOptions(serving); !valid.ok()) {
    std::fprintf(stderr, "serving flags: %s\n", valid.message().c_str());
    return 2;
  }
  const int64_t budget = absl::GetFlag(FLAGS_model_memory_budget);
  if (budget < 0) {
    std::fprintf(stderr, "--model-memory-budget must be ≥ 0 bytes (0: 90%% of the device memory), got %lld\n",
                 static_cast<long long>(budget));
    return 2;
  }
  host_options.memory_budget_bytes = budget > 0 ? static_cast<uint64_t>(budget) : device.memory_bytes / 10 * 9;

  mq::worker::QuantizeExecutor executor(plugin);
  mq::worker::WorkerAgent agent(options, &server, cache->get(), &executor, &metrics);
  agent.Start();

  host_options.models_dir = mq::JoinPath(cache_dir, "models");
  host_options.plugin = plugin;
  host_options.metrics = &metrics;
  mq::worker::ModelHost host(host_options, cache->get(), &server);
  metrics.SetDevice(backend, device.name);
  auto serving_collector = std::make_shared<mq::worker::ServingCollector>(&host);
  if (exposer != nullptr) exposer->RegisterCollectable(serving_collector);
  auto process_collector = std::make_shared<mq::ProcessCollector>();
  if (exposer != nullptr) exposer->RegisterCollectable(process_collector);
  auto gpu_memory_collector = std::make_shared<mq::worker::DeviceMemoryCollector>(plugin, gpu.total_bytes);
  if (exposer != nullptr && plugin != nullptr) exposer->RegisterCollectable(gpu_memory_collector);
  mambaquant::v1::WorkerCapacity capacity;
  capacity.set_device(backend);
  capacity.set_device_name(device.name);
  capacity.set_device_memory_bytes(device.memory_bytes);
  capacity.set_model_memory_budget_bytes(host_options.memory_budget_bytes);
  capacity.set_max_sequences(serving.backend.num_slots);
  capacity.set_max_waiting(serving.max_waiting);
  capacity.set_max_prompt_tokens(serving.max_prompt_tokens);
  capacity.set_max_new_tokens(serving.max_new_tokens);
  capacity.set_max_score_tokens(serving.max_score_tokens);
  // A worker that cannot serve what it was told to preload stops at once, saying why, instead of
  // failing later under load.
  static std::atomic<bool> fatal{false};
  mq::worker::InferenceStream inference(&server, &host, capacity, [&agent] { return agent.worker_id(); },
                                        absl::GetFlag(FLAGS_preload), [](const std::string& why) {
                                          if (fatal.exchange(true)) return;
                                          mq::Log(mq::LogLevel::kError, "cannot serve as configured; exiting").Kv("error", why);
                                          std::fprintf(stderr, "mq-worker: %s\n", why.c_str());
                                          ::kill(::getpid(), SIGTERM);
                                        });
  inference.Start();
  mq::Log(mq::LogLevel::kInfo, "mq-worker started")
      .Kv("server", absl::GetFlag(FLAGS_server)).Kv("listen", absl::GetFlag(FLAGS_listen)).Kv("port", port)
      .Kv("backend", backend).Kv("device", device.name).Kv("cache_dir", cache_dir);

  int sig = mq::WaitForShutdownSignal();
  mq::Log(mq::LogLevel::kInfo, "signal received; draining").Kv("signal", sig).Kv("drain_s", absl::GetFlag(FLAGS_drain_seconds));
  if (auto* health = health_server->GetHealthCheckService()) health->Shutdown();
  // A rolling update: the server stops routing calls here, the running ones finish (up to
  // --drain-seconds), and only those still running then are cut.
  if (!fatal) {
    const size_t left = inference.Drain(std::chrono::steady_clock::now() + std::chrono::seconds(absl::GetFlag(FLAGS_drain_seconds)));
    mq::Log(left == 0 ? mq::LogLevel::kInfo : mq::LogLevel::kWarning, "drained; leaving").Kv("calls_cut", static_cast<int64_t>(left));
  }
  inference.Stop();
  agent.Shutdown();
  health_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  return fatal ? 1 : 0;
}
