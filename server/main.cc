// mq-server: the control server. See docs/deploy.md for the flags.
#include <malloc.h>
#include <pthread.h>
#include <signal.h>

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
ABSL_FLAG(std::string, tokens_file, "", "Tokens file: hashed bearer tokens with roles (docs/security.md); re-read on SIGHUP");
ABSL_FLAG(std::string, token, "", "Shorthand: one admin bearer token (else --token-file or $MQ_TOKEN)");
ABSL_FLAG(std::string, token_file, "", "File holding the admin bearer token of --token");
ABSL_FLAG(std::string, worker_token, "", "Shorthand: one worker bearer token (else --worker-token-file or $MQ_WORKER_TOKEN)");
ABSL_FLAG(std::string, worker_token_file, "", "File holding the worker bearer token of --worker-token");
ABSL_FLAG(std::string, worker_listen, "", "The worker API's own port host:port, mutual TLS (needs --worker-ca); the public port then refuses the worker API");
ABSL_FLAG(std::string, worker_ca, "", "PEM CA that signs worker client certificates (for --worker-listen)");
ABSL_FLAG(int, cert_reload_seconds, 60, "How often certificate, key and CA files are re-read (rotation without restart)");
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
  {
    // SIGHUP (tokens reload) is taken by sigwait below, so no thread may receive it.
    sigset_t hup;
    sigemptyset(&hup);
    sigaddset(&hup, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &hup, nullptr);
  }
  absl::SetProgramUsageMessage("mq-server --listen ADDR --data-dir DIR [--metrics-listen ADDR] [--insecure | --tls-cert F --tls-key F (--tokens-file F | --token T)] [--worker-listen ADDR --worker-ca F]");
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
  mq::RouteProtobufLogs();

  mq::server::ServerOptions options;
  options.listen = absl::GetFlag(FLAGS_listen);
  options.metrics_listen = absl::GetFlag(FLAGS_metrics_listen);
  options.health_listen = absl::GetFlag(FLAGS_health_listen);
  options.data_dir = absl::GetFlag(FLAGS_data_dir);
  options.tls.insecure = absl::GetFlag(FLAGS_insecure);
  options.tls.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.tls.key_file = absl::GetFlag(FLAGS_tls_key);
  options.tokens_file = absl::GetFlag(FLAGS_tokens_file);
  options.worker_listen = absl::GetFlag(FLAGS_worker_listen);
  options.worker_ca = absl::GetFlag(FLAGS_worker_ca);
  if (absl::GetFlag(FLAGS_cert_reload_seconds) < 1 || absl::GetFlag(FLAGS_cert_reload_seconds) > 86400) {
    std::fprintf(stderr, "--cert-reload-seconds must be 1..86400\n");
    return 2;
  }
  options.tls.reload_seconds = static_cast<unsigned int>(absl::GetFlag(FLAGS_cert_reload_seconds));
  {
    // The environment is read only without --insecure (a shell may export MQ_TOKEN for mqctl);
    // flags given with --insecure are refused by MqServer::Start.
    const bool env = !options.tls.insecure;
    auto token = mq::ResolveToken(absl::GetFlag(FLAGS_token), absl::GetFlag(FLAGS_token_file), env ? "MQ_TOKEN" : nullptr);
    auto worker_token = mq::ResolveToken(absl::GetFlag(FLAGS_worker_token), absl::GetFlag(FLAGS_worker_token_file),
                                         env ? "MQ_WORKER_TOKEN" : nullptr);
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
  // SIGHUP re-reads the tokens file; SIGTERM and SIGINT drain and stop.
  int sig = 0;
  for (;;) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (sigwait(&set, &sig) != 0) continue;
    if (sig != SIGHUP) break;
    (void)(*server)->ReloadTokens();  // logs the outcome; a broken file keeps the old tokens
  }
  mq::Log(mq::LogLevel::kInfo, "signal received").Kv("signal", sig);
  (*server)->Shutdown();
  return 0;
}
