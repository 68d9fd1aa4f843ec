#include "auth.h"

#include "absl/strings/string_view.h"

#include "absl/strings/str_cat.h"
#include "rpc_roles.h"

namespace mq::server {
namespace {

using InputMetadata = grpc::AuthMetadataProcessor::InputMetadata;
using OutputMetadata = grpc::AuthMetadataProcessor::OutputMetadata;

absl::string_view Find(const InputMetadata& md, absl::string_view key) {
  auto it = md.find(grpc::string_ref(key.data(), key.size()));
  if (it == md.end()) return {};
  return absl::string_view(it->second.data(), it->second.size());
}

// The token of "Bearer <token>"; empty when the value has another form.
absl::string_view BearerToken(absl::string_view value) {
  constexpr absl::string_view kPrefix = "Bearer ";
  if (value.substr(0, kPrefix.size()) != kPrefix) return {};
  return value.substr(kPrefix.size());
}

class PublicPortProcessor : public grpc::AuthMetadataProcessor {
 public:
  PublicPortProcessor(const TokenStore* tokens, bool worker_api_here) : tokens_(tokens), worker_api_here_(worker_api_here) {}
  // A digest and a table lookup: cheap enough to run on gRPC's own thread.
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& md, grpc::AuthContext*, OutputMetadata*, OutputMetadata*) override {
    const absl::string_view method = Find(md, ":path");
    auto access = AccessFor(method);
    if (access.has_value() && access->open) return grpc::Status::OK;
    if (access.has_value() && IsWorkerApiMethod(method) && !worker_api_here_) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the worker API is served on the worker port (mutual TLS)");
    }
    const absl::string_view header = Find(md, "authorization");
    if (header.empty()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "missing \"authorization: Bearer <token>\" metadata");
    }
    const absl::string_view token = BearerToken(header);
    if (token.empty()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "authorization metadata must be \"Bearer <token>\"");
    auto identity = tokens_->Find(token);
    // The message never echoes the token (nor does anything log it).
    if (!identity.has_value()) return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "invalid token");
    // Only an authenticated caller learns that a method does not exist, and as gRPC itself says it
    // (UNIMPLEMENTED), so that clients probing for a service version fall back (grpcurl tries
    // reflection v1, then v1alpha, on UNIMPLEMENTED).
    if (!access.has_value()) {
      return grpc::Status(grpc::StatusCode::UNIMPLEMENTED,
                          absl::StrCat("unknown method ", method.substr(0, 200)));
    }
    if ((access->roles & RoleBit(identity->role)) == 0) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                          absl::StrCat("role ", RoleName(identity->role), " (token ", identity->name, ") may not call ",
                                       method.substr(method.rfind('/') + 1)));
    }
    return grpc::Status::OK;
  }

 private:
  const TokenStore* tokens_;
  const bool worker_api_here_;
};

class WorkerPortProcessor : public grpc::AuthMetadataProcessor {
 public:
  bool IsBlocking() const override { return false; }

  grpc::Status Process(const InputMetadata& md, grpc::AuthContext* context, OutputMetadata*, OutputMetadata*) override {
    const absl::string_view method = Find(md, ":path");
    auto access = AccessFor(method);
    if (access.has_value() && access->open) return grpc::Status::OK;
    if (!access.has_value() || !IsWorkerApiMethod(method)) {
      return grpc::Status(grpc::StatusCode::PERMISSION_DENIED, "the worker port serves only the worker API");
    }
    // The handshake required and verified the certificate; a worker id binds to its name.
    if (context == nullptr || context->FindPropertyValues("x509_common_name").empty()) {
      return grpc::Status(grpc::StatusCode::UNAUTHENTICATED, "the worker port needs a client certificate with a common name");
    }
    return grpc::Status::OK;
  }
};

}  // namespace

std::shared_ptr<grpc::AuthMetadataProcessor> Authenticator::PublicPortProcessor(bool worker_api_here) const {
  return std::make_shared<mq::server::PublicPortProcessor>(tokens_, worker_api_here);
}

std::shared_ptr<grpc::AuthMetadataProcessor> Authenticator::WorkerPortProcessor() const {
  return std::make_shared<mq::server::WorkerPortProcessor>();
}

std::string Authenticator::CallerIdentity(const grpc::ServerContextBase& ctx) const {
  if (tokens_ == nullptr) return std::string();
  auto auth = ctx.auth_context();
  if (auth != nullptr) {
    auto cn = auth->FindPropertyValues("x509_common_name");
    if (!cn.empty()) return absl::StrCat("cert:", absl::string_view(cn.front().data(), cn.front().size()));
  }
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it != md.end()) {
    auto identity = tokens_->Find(BearerToken(absl::string_view(it->second.data(), it->second.size())));
    if (identity.has_value()) return absl::StrCat("token:", identity->name);
  }
  return std::string();
}

}  // namespace mq::server
