// The structure of tokenizer.json, bounded: what the server checks at upload commit and what the
// engine's tokenizer checks before it builds anything. Counts (vocabulary, merges, added tokens),
// an added token's length and the size of a template post-processor are capped (format/limits.h).
// The tokenizer itself then judges the content (ids consistent, features it reproduces).
#pragma once

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace mq::format {

// DATA_LOSS naming the field when the top level is not an object or a count or length is
// outside the bounds. Fields of the wrong type are left to the tokenizer, which names them.
Status CheckTokenizerJson(const nlohmann::json& root);

// Bounded parse (size, depth) followed by CheckTokenizerJson; `source` prefixes messages.
StatusOr<nlohmann::json> ParseTokenizerJson(std::string_view text, const std::string& source);

}  // namespace mq::format
