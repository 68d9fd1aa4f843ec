#include "credentials.h"

#include <cstdlib>

#include <grpcpp/create_channel.h>
#include <grpcpp/security/server_credentials.h>

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
  // Chunks are at most 4 MiB of payload; leave room for framing.
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 30000);
  // Reconnect quickly after a server restart: the default backoff grows to two minutes, longer
  // than a worker lease.
  args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 200);
  args.SetInt(GRPC_ARG_MIN_RECONNECT_BACKOFF_MS, 200);
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
  auto cert = ReadFileToString(tls.cert_file, 1 << 20);
  if (!cert.ok()) return cert.status();
  auto key = ReadFileToString(tls.key_file, 1 << 20);
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions ssl;
  ssl.pem_key_cert_pairs.push_back({*key, *cert});
  return grpc::SslServerCredentials(ssl);
}

void PrepareClientContext(grpc::ClientContext* ctx, const std::string& token, absl::Duration timeout) {
  if (!token.empty()) ctx->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  if (timeout > absl::ZeroDuration()) {
    ctx->set_deadline(absl::ToChronoTime(absl::Now() + timeout));
  }
}

}  // namespace mq
