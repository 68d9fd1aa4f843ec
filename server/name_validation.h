// Validation of every name and path a client sends: artifact names, references "name:version",
// file paths inside artifacts, job ids. Names end up in file paths, logs and metric-free lookups,
// so the charset is strict and nothing resembling a path is accepted.
#pragma once

#include <cstdint>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace mq::server {

inline constexpr size_t kMaxNameBytes = 128;
inline constexpr size_t kMaxPathBytes = 255;
inline constexpr int kMaxPathComponents = 8;
inline constexpr int64_t kMaxVersion = 2147483647;

// [A-Za-z0-9][A-Za-z0-9._-]{0,127}, without "..". INVALID_ARGUMENT says which rule failed.
absl::Status ValidateName(absl::string_view name);

// A relative '/'-separated path: components [A-Za-z0-9._-]{1,128}, none "." or "..", no leading
// or trailing '/', no empty component, at most kMaxPathComponents components and kMaxPathBytes.
absl::Status ValidateFilePath(absl::string_view path);

struct ArtifactRef {
  std::string name;
  int64_t version = 0;  // 0: latest
};

// "name" or "name:version" (version 1..2^31-1, decimal, no sign or leading zeros).
absl::StatusOr<ArtifactRef> ParseRef(absl::string_view ref);
std::string FormatRef(absl::string_view name, int64_t version);

// "j-" followed by 16 lower-case hex characters.
absl::Status ValidateJobId(absl::string_view id);

}  // namespace mq::server
