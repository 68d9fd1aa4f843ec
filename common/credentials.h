// Transport security and bearer tokens, shared by mq-server, mq-worker and mqctl.
//
// Default: TLS, and every call carries "authorization: Bearer <token>". --insecure: plaintext and
// no token, for local development only. Workers may instead use mutual TLS on the server's worker
// port (client certificates signed by the server's --worker-ca). See docs/security.md.
#pragma once

#include <memory>
#include <string>

#include <grpcpp/client_context.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/security/server_credentials.h>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace mq {

// The token from, in order: `flag_value`, the file `token_file` (trailing whitespace trimmed),
// the environment variable `env_var`. Empty when none is set.
absl::StatusOr<std::string> ResolveToken(const std::string& flag_value, const std::string& token_file,
                                         const char* env_var);

struct ClientTlsOptions {
  bool insecure = false;
  // PEM file of the CA (or self-signed certificate) to trust; system roots when empty.
  std::string ca_file;
  // Overrides the name checked against the server certificate (tests, IP addresses).
  std::string server_name_override;
  // This client's certificate chain and key (PEM), presented for mutual TLS (mq-worker on the
  // server's worker port). Both or neither.
  std::string client_cert_file;
  std::string client_key_file;
};

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeChannel(const std::string& target,
                                                           const ClientTlsOptions& tls);

struct ServerTlsOptions {
  bool insecure = false;
  std::string cert_file;
  std::string key_file;
  // When set: mutual TLS, every client must present a certificate signed by this CA (PEM).
  std::string client_ca_file;
  // How often the certificate, key and CA files are re-read: replacing them rotates the
  // certificates without a restart (gRPC's FileWatcherCertificateProvider).
  unsigned int reload_seconds = 60;
};

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsOptions& tls);

// Adds the bearer token (when non-empty) and a deadline (when positive) to a client context.
void PrepareClientContext(grpc::ClientContext* ctx, const std::string& token, absl::Duration timeout);

}  // namespace mq
