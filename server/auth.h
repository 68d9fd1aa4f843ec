// Authentication and authorization of every call, in one place: gRPC auth metadata processors
// installed on the server's listening ports run before any handler (reflection and health
// included) and check the caller against the role table (rpc_roles.h).
//
// Public port: "authorization: Bearer <token>" looked up in the TokenStore; UNAUTHENTICATED
// without a valid token, PERMISSION_DENIED when the token's role may not call the method (or the
// method is not in the table). Health is open.
// Worker port (mutual TLS): the TLS handshake already verified the client certificate against
// --worker-ca; only the worker API (and health) is served there, and no token is asked for.
// --insecure: no processor at all (plaintext local development, everything open).
#pragma once

#include <memory>
#include <string>

#include <grpcpp/security/auth_metadata_processor.h>
#include <grpcpp/server_context.h>

#include "token_store.h"

namespace mq::server {

class Authenticator {
 public:
  // tokens == nullptr: insecure, nothing checked.
  explicit Authenticator(const TokenStore* tokens) : tokens_(tokens) {}

  bool enabled() const { return tokens_ != nullptr; }

  // For the public port. worker_api_here=false when workers have their own (mTLS) port: the
  // worker API is then refused here whatever the token.
  std::shared_ptr<grpc::AuthMetadataProcessor> PublicPortProcessor(bool worker_api_here) const;
  // For the mTLS worker port.
  std::shared_ptr<grpc::AuthMetadataProcessor> WorkerPortProcessor() const;

  // Who is calling, for binding a worker's results to the worker a job was assigned to:
  // "cert:<common name>" for a client certificate (worker port), "token:<name>" for a bearer
  // token, "" when insecure (no identity to bind).
  std::string CallerIdentity(const grpc::ServerContextBase& ctx) const;

 private:
  const TokenStore* tokens_;
};

}  // namespace mq::server
