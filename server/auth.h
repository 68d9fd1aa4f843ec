// Bearer-token authentication of incoming calls. Clients and workers may hold different tokens
// (--token, --worker-token). Disabled only with --insecure.
#pragma once

#include <string>

#include <grpcpp/server_context.h>

#include "absl/status/status.h"

namespace mq::server {

class Authenticator {
 public:
  // enabled=false accepts every call (plaintext local development).
  Authenticator(bool enabled, std::string client_token, std::string worker_token)
      : enabled_(enabled), client_token_(std::move(client_token)), worker_token_(std::move(worker_token)) {}

  // UNAUTHENTICATED unless the call carries "authorization: Bearer <client token>".
  absl::Status CheckClient(const grpc::ServerContextBase& ctx) const { return Check(ctx, client_token_); }
  // Same for the worker token.
  absl::Status CheckWorker(const grpc::ServerContextBase& ctx) const { return Check(ctx, worker_token_); }

 private:
  absl::Status Check(const grpc::ServerContextBase& ctx, const std::string& expected) const;
  bool enabled_;
  std::string client_token_;
  std::string worker_token_;
};

}  // namespace mq::server
