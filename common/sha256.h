// SHA-256 (OpenSSL) as lower-case hex, incremental and over files.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace mq {

class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(Sha256&&) noexcept;
  Sha256& operator=(Sha256&&) noexcept;

  void Update(const void* data, size_t size);
  void Update(absl::string_view data) { Update(data.data(), data.size()); }
  // Lower-case hex of the digest; the object must not be updated afterwards.
  std::string FinishHex();

 private:
  struct Ctx;
  std::unique_ptr<Ctx> ctx_;
};

std::string Sha256Hex(absl::string_view data);
// Hashes the first `limit` bytes of the file (all of it when limit is UINT64_MAX).
absl::StatusOr<std::string> Sha256File(const std::string& path, uint64_t limit = UINT64_MAX);
// True for 64 lower-case hex characters.
bool IsSha256Hex(absl::string_view digest);

}  // namespace mq
