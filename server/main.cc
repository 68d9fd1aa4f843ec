// mq-server: the control server. See docs/deploy.md for the flags.
#include <malloc.h>

#include <cstdio>
#include <string>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/usage.h"
#include "credentials.h"
#include "flag_names.h"
#include "log.h"
#include "mq_server.h"
#include "shutdown_signal.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:7070", "gRPC listen address host:port");
ABSL_FLAG(std::string, metrics_listen, "", "Prometheus /metrics listen address host:port (empty: off)");
ABSL_FLAG(std::string, health_listen, "", "Plaintext gRPC health (nothing else) host:port, for Kubernetes probes when the API uses TLS (empty: off)");
ABSL_FLAG(std::string, data_dir, "./mq-data", "Directory for the SQLite database and the blob store");
ABSL_FLAG(bool, insecure, false, "Plaintext without authentication (local development only)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain for TLS");
ABSL_FLAG(std::string, tls_key, "", "PEM private key for TLS");
ABSL_FLAG(std::string, token, "", "Bearer token clients must present (else --token-file or $MQ_TOKEN)");
ABSL_FLAG(std::string, token_file, "", "File holding the client bearer token");
ABSL_FLAG(std::string, worker_token, "", "Bearer token workers must present (default: the client token; else $MQ_WORKER_TOKEN)");
ABSL_FLAG(std::string, worker_token_file, "", "File holding the worker bearer token");
ABSL_FLAG(int, lease_seconds, 15, "Worker lease: a worker silent this long is dropped and its jobs requeued");
ABSL_FLAG(int, max_attempts, 3, "Assignments per job before it fails (protects against jobs that kill workers)");
ABSL_FLAG(int64_t, max_queued_jobs, 10000, "Queued jobs beyond which SubmitJob answers RESOURCE_EXHAUSTED");
ABSL_FLAG(int, drain_seconds, 20, "On SIGTERM, how long in-flight calls may take to finish");
ABSL_FLAG(int64_t, max_file_bytes, int64_t{64} << 30, "Largest file accepted in an upload, bytes");
ABSL_FLAG(std::string, log_level, "info", "debug | info | warn | error");
ABSL_FLAG(std::string, log_format, "text", "text (key=value) | json (one JSON object per line)");

int main(int argc, char** argv) {
  // Transfer chunks are 1 MiB buffers allocated on many gRPC threads. A fixed mmap threshold
  // returns them to the system when freed instead of letting per-thread arenas keep them, which
  // keeps the server's memory flat however large the files streaming through it.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  mq::BlockShutdownSignals();
  absl::SetProgramUsageMessage("mq-server --listen ADDR --data-dir DIR [--metrics-listen ADDR] [--insecure | --tls-cert F --tls-key F --token T]");
  mq::DashedFlagArgs dashed(argc, argv);
  absl::ParseCommandLine(dashed.argc(), dashed.argv());
  mq::SetLogComponent("server");
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

  mq::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.tls.insecure = absl::GetFlag(FLAGS_insecure);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  if (!options.tls.insecure) {
    auto token = mq::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file), "MQ_TOKEN");
    auto worker_token = mq::ResolveToken(absl::GetFlag(FLAGS_worker_token), absl::GetFlag(FLAGS_worker_token_file), "MQ_WORKER_TOKEN");
    if (!token.ok() || !worker_token.ok()) {
      mq::Log(mq::LogLevel::kError, "reading tokens failed").Kv("error", token.ok() ? worker_token.status() : token.status());
      return 2;
    }
    options.client_token = *token;
    options.worker_token = *worker_token;
  }
  if (absl::GetFlag(FLAGS_lease_seconds) < 1 || absl::GetFlag(FLAGS_max_attempts) < 1) {
    std::fprintf(stderr, "--lease-seconds and --max-attempts must be at least 1\n");
    return 2;
  }
  options.lease = absl::Seconds(absl::GetFlag(FLAGS_lease_seconds));
  options.max_attempts = absl::GetFlag(FLAGS_max_attempts);
  options.max_queued_jobs = absl::GetFlag(FLAGS_max_queued_jobs);
  options.drain_timeout = absl::Seconds(absl::GetFlag(FLAGS_drain_seconds));
  options.limits.max_file_bytes = static_cast<uint64_t>(absl::GetFlag(FLAGS_max_file_bytes));

  auto server = mq::server::MqServer::Start(options);
  if (!server.ok()) {
    mq::Log(mq::LogLevel::kError, "mq-server failed to start").Kv("error", server.status());
    return 1;
  }
  int sig = mq::WaitForShutdownSignal();
  mq::Log(mq::LogLevel::kInfo, "signal received").Kv("signal", sig);
  (*server)->Shutdown();
  return 0;
}
