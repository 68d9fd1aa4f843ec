#include "credentials.h"

#include "grpc_limits.h"

#include <cstdlib>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/server_credentials.h>
#include <grpcpp/security/tls_certificate_provider.h>
#include <grpcpp/security/tls_credentials_options.h>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "file_util.h"

namespace mq {

absl::StatusOr<std::string> ResolveToken(const std::string& flag_value, const std::string& token_file,
                                         const char* env_var) {
  if (!flag_value.empty()) return flag_value;
  if (!token_file.empty()) {
    auto content = ReadFileToString(token_file, 64 * 1024);
    if (!content.ok()) return content.status();
    std::string token(absl::StripAsciiWhitespace(*content));
    if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("token file ", token_file, " is empty"));
    return token;
  }
  if (env_var != nullptr) {
    const char* env = std::getenv(env_var);
    if (env != nullptr) return std::string(env);
  }
  return std::string();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ClientTlsOptions& tls) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(kMaxGrpcMessageBytes);
  args.SetMaxSendMessageSize(kMaxGrpcMessageBytes);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  // Reconnect quickly after a server restart: the default backoff grows to two minutes, longer
  // than a worker lease. GRPC_ARG_MIN_RECONNECT_BACKOFF_MS is left at its default: gRPC uses it
  // as the minimum connect timeout (20 s), and at 200 ms a handshake delayed by a busy machine
  // failed the call with UNAVAILABLE (seen in the soak test, docs/reliability.md).
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (tls.insecure) {
    creds = grpc::InsecureChannelCredentials();
  } else {
    grpc::SslCredentialsOptions ssl;
    if (!tls.ca_file.empty()) {
      auto pem = ReadFileToString(tls.ca_file, 1 << 20);
      if (!pem.ok()) return pem.status();
      ssl.pem_root_certs = *pem;
    }
    if (tls.client_cert_file.empty() != tls.client_key_file.empty()) {
      return absl::InvalidArgumentError("--client-cert and --client-key go together");
    }
    if (!tls.client_cert_file.empty()) {
      auto cert = ReadFileToString(tls.client_cert_file, 1 << 20);
      if (!cert.ok()) return cert.status();
      auto key = ReadFileToString(tls.client_key_file, 1 << 20);
      if (!key.ok()) return key.status();
      ssl.pem_cert_chain = *cert;
      ssl.pem_private_key = *key;
    }
    creds = grpc::SslCredentials(ssl);
    if (!tls.server_name_override.empty()) {
      args.SetSslTargetNameOverride(tls.server_name_override);
    }
  }
  return grpc::CreateCustomChannel(target, creds, args);
}

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsOptions& tls) {
  if (tls.insecure) return grpc::InsecureServerCredentials();
  if (tls.cert_file.empty() || tls.key_file.empty()) {
    return absl::InvalidArgumentError(
        "TLS needs --tls-cert and --tls-key (or --insecure for plaintext local development)");
  }
  // Read once here so a missing or empty file is a clear start-up error; the provider then
  // re-reads them every reload_seconds (a failed re-read keeps the last good ones).
  for (const std::string* f : {&tls.cert_file, &tls.key_file, &tls.client_ca_file}) {
    if (f->empty()) continue;
    auto pem = ReadFileToString(*f, 1 << 20);
    if (!pem.ok()) return pem.status();
    if (pem->find("-----BEGIN ") == std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(*f, " is not a PEM file"));
    }
  }
  if (tls.reload_seconds < 1) return absl::InvalidArgumentError("the certificate reload interval must be at least 1 s");
  const bool mutual = !tls.client_ca_file.empty();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      tls.key_file, tls.cert_file, mutual ? tls.client_ca_file : std::string(), tls.reload_seconds);
  grpc::experimental::TlsServerCredentialsOptions options(provider);
  options.watch_identity_key_cert_pairs();
  if (mutual) {
    options.watch_root_certs();
    options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  return grpc::experimental::TlsServerCredentials(options);
}

void PrepareClientContext(grpc::ClientContext* ctx, const std::string& token, absl::Duration timeout) {
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  if (timeout > absl::ZeroDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace mq
