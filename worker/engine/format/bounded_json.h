// The one JSON reader of the model-format files: the size and the nesting depth are checked
// before nlohmann builds anything, and a parse error is a Status naming the source, never an
// exception.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "format/limits.h"
#include "util/status.h"

namespace mq::format {

// Refuses text whose arrays/objects nest deeper than `max_depth` (a linear pre-scan that skips
// strings), naming the byte offset.
Status CheckJsonNesting(std::string_view text, size_t max_depth);

// Parses `text` as JSON. Errors carry `code` (INVALID_ARGUMENT for a request's file,
// DATA_LOSS for a stored one) and are prefixed with `source`. Empty text is an error.
StatusOr<nlohmann::json> ParseJson(std::string_view text, const std::string& source, uint64_t max_bytes,
                                   StatusCode code = StatusCode::kInvalidArgument,
                                   size_t max_depth = kMaxJsonDepth);

// Reads a whole file of at most `max_bytes` (NotFound when it cannot be opened,
// ResourceExhausted-free: an over-long file is `code`).
StatusOr<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes,
                                      StatusCode code = StatusCode::kInvalidArgument);

}  // namespace mq::format
