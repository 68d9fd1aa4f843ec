#include "auth.h"

#include <openssl/crypto.h>

namespace mq::server {

absl::Status Authenticator::Check(const grpc::ServerContextBase& ctx, const std::string& expected) const {
  if (!enabled_) return absl::OkStatus();
  const auto& md = ctx.client_metadata();
  auto it = md.find("authorization");
  if (it == md.end()) return absl::UnauthenticatedError("missing \"authorization: Bearer <token>\" metadata");
  std::string value(it->second.data(), it->second.size());
  static constexpr char kPrefix[] = "Bearer ";
  if (value.compare(0, sizeof(kPrefix) - 1, kPrefix) != 0) {
    return absl::UnauthenticatedError("authorization metadata must be \"Bearer <token>\"");
  }
  std::string token = value.substr(sizeof(kPrefix) - 1);
  // Constant time, so the comparison leaks nothing about how much of a guess was right.
  if (expected.empty() || token.size() != expected.size() ||
      CRYPTO_memcmp(token.data(), expected.data(), token.size()) != 0) {
    return absl::UnauthenticatedError("invalid token");
  }
  return absl::OkStatus();
}

}  // namespace mq::server
