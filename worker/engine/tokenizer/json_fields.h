// Typed access to tokenizer.json fields that reports what is wrong and where, instead of letting
// nlohmann throw: the file is untrusted input.
#pragma once

#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mq::json_fields {

// `path` names the object in messages, e.g. "model" or "added_tokens[3]".
// A missing member is an error; use the Optional* forms where the format allows absence.
StatusOr<const nlohmann::json*> Member(const nlohmann::json& object, std::string_view path,
                                       std::string_view key);

// Absent or null gives `fallback`; any other non-bool is an error.
StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view path,
                            std::string_view key, bool fallback);
StatusOr<std::string> String(const nlohmann::json& object, std::string_view path,
                             std::string_view key);
// Absent or null gives nullopt.
StatusOr<std::optional<std::string>> OptionalString(const nlohmann::json& object,
                                                    std::string_view path, std::string_view key);

// The object's "type" member, e.g. "BPE" or "NFC"; a view into `object`.
StatusOr<std::string_view> Type(const nlohmann::json& object, std::string_view path);

// Short, printable rendering of a token or value for error messages.
std::string Quote(std::string_view text);

}  // namespace mq::json_fields
