#include "tokenizer/json_fields.h"

#include <cstdio>

namespace mq::json_fields {
namespace {

std::string Where(std::string_view path, std::string_view key) {
  std::string where(path);
  if (!where.empty()) where += '.';
  where += key;
  return where;
}

}  // namespace

StatusOr<const nlohmann::json*> Member(const nlohmann::json& object, std::string_view path,
                                       std::string_view key) {
  if (!object.is_object()) {
    return DataLossError((path.empty() ? std::string("top level") : std::string(path)) +
                         " is not a JSON object");
  }
  const auto it = object.find(key);
  if (it == object.end()) return DataLossError("missing field " + Where(path, key));
  return &*it;
}

StatusOr<bool> OptionalBool(const nlohmann::json& object, std::string_view path,
                            std::string_view key, bool fallback) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) {
    return DataLossError(Where(path, key) + " must be true or false, got " +
                         std::string(it->type_name()));
  }
  return it->get<bool>();
}

StatusOr<std::string> String(const nlohmann::json& object, std::string_view path,
                             std::string_view key) {
  MQ_ASSIGN_OR_RETURN(const nlohmann::json* value, Member(object, path, key));
  if (!value->is_string()) {
    return DataLossError(Where(path, key) + " must be a string, got " +
                         std::string(value->type_name()));
  }
  return value->get<std::string>();
}

StatusOr<std::optional<std::string>> OptionalString(const nlohmann::json& object,
                                                    std::string_view path, std::string_view key) {
  const auto it = object.find(key);
  if (it == object.end() || it->is_null()) return std::optional<std::string>();
  if (!it->is_string()) {
    return DataLossError(Where(path, key) + " must be a string or null, got " +
                         std::string(it->type_name()));
  }
  return std::optional<std::string>(it->get<std::string>());
}

StatusOr<std::string_view> Type(const nlohmann::json& object, std::string_view path) {
  MQ_ASSIGN_OR_RETURN(const nlohmann::json* value, Member(object, path, "type"));
  if (!value->is_string()) {
    return DataLossError(Where(path, "type") + " must be a string, got " +
                         std::string(value->type_name()));
  }
  return std::string_view(value->get_ref<const std::string&>());
}

std::string Quote(std::string_view text) {
  constexpr size_t kMaxShown = 40;
  std::string out = "\"";
  size_t shown = text.size() < kMaxShown ? text.size() : kMaxShown;
  // Cutting inside a UTF-8 sequence would make the message itself ill-formed.
  while (shown < text.size() && shown > 0 &&
         (static_cast<unsigned char>(text[shown]) & 0xC0) == 0x80) {
    --shown;
  }
  for (size_t i = 0; i < shown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20 || c == 0x7F) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (shown < text.size()) out += "...";
  out += '"';
  return out;
}

}  // namespace mq::json_fields
