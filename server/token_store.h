// The bearer tokens the server accepts, each with a role and a name, stored as SHA-256 digests
// (tokens are 256-bit random secrets, so a plain digest is enough: nothing to brute-force).
//
// Tokens file, one token a line; blank lines and lines starting with '#' are ignored:
//   sha256:<64 lower-case hex> <role> <name>
// role: admin | operator | inference | worker; name: 1..64 of [A-Za-z0-9._-], unique (it names
// the token in logs, never the secret). `mqctl tokens mint` prints such a line.
//
// Reload() (SIGHUP) re-reads the file and swaps the whole set at once; a file that fails to parse
// leaves the previous set in force.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "rpc_roles.h"

namespace mq::server {

// Limits of the tokens file (one owner: here).
inline constexpr size_t kMaxTokensFileBytes = 1 << 20;
inline constexpr size_t kMaxTokens = 10000;
inline constexpr size_t kMaxTokenNameBytes = 64;
// A presented bearer token longer than this is refused before hashing.
inline constexpr size_t kMaxBearerTokenBytes = 512;

struct TokenEntry {
  std::array<uint8_t, 32> digest{};
  Role role = Role::kOperator;
  std::string name;
};

struct TokenIdentity {
  Role role;
  std::string name;
};

// Parses a tokens file's content; every line and field checked (errors name the line).
absl::StatusOr<std::vector<TokenEntry>> ParseTokensFile(absl::string_view content);

// An entry for a token given in the clear (--token, --worker-token shorthand).
TokenEntry EntryForSecret(absl::string_view secret, Role role, std::string name);

// A fresh token: "mqt_" + 64 hex characters of 32 random bytes (OpenSSL RAND_bytes).
absl::StatusOr<std::string> MintToken();
// The tokens-file line for `token`.
std::string TokensFileLine(absl::string_view token, Role role, absl::string_view name);

class TokenStore {
 public:
  // `path` may be empty (only the fixed entries). Fails when the file does not parse.
  static absl::StatusOr<std::unique_ptr<TokenStore>> Create(std::string path, std::vector<TokenEntry> fixed);

  // Re-reads the file; on error the old set stays and the error is returned.
  absl::Status Reload();

  // The identity of a presented token; nullopt when unknown. Compares digests in constant time.
  std::optional<TokenIdentity> Find(absl::string_view token) const;
  size_t size() const;
  const std::string& path() const { return path_; }

 private:
  TokenStore(std::string path, std::vector<TokenEntry> fixed) : path_(std::move(path)), fixed_(std::move(fixed)) {}
  absl::StatusOr<std::shared_ptr<const std::vector<TokenEntry>>> Load() const;

  const std::string path_;
  const std::vector<TokenEntry> fixed_;
  mutable absl::Mutex mu_;
  std::shared_ptr<const std::vector<TokenEntry>> current_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
