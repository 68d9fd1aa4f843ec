#include "format/safe_name.h"

#include <cstdio>
#include <string>

#include "format/limits.h"

namespace mq::format {
namespace {

bool IsAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'); }

}  // namespace

std::string Printable(std::string_view text) {
  constexpr size_t kMaxShown = 64;
  std::string out = "\"";
  for (size_t i = 0; i < text.size() && i < kMaxShown; ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    if (c < 0x20 || c >= 0x7F || c == '"' || c == '\\') {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\x%02X", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (text.size() > kMaxShown) out += "...";
  return out + "\"";
}

Status CheckTensorName(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > kMaxTensorNameBytes) {
    return InvalidArgumentError(std::string(what) + " " + Printable(name) + " must be 1.." +
                                std::to_string(kMaxTensorNameBytes) + " bytes");
  }
  for (const char c : name) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-' && c != '/' && c != ':') {
      return InvalidArgumentError(std::string(what) + " " + Printable(name) +
                                  " has a character outside [A-Za-z0-9._-/:]");
    }
  }
  return OkStatus();
}

Status CheckPlainFileName(std::string_view name, std::string_view what) {
  if (name.empty() || name.size() > kMaxFileNameBytes || name == "." || name == "..") {
    return InvalidArgumentError(std::string(what) + " " + Printable(name) + " is not a plain file name");
  }
  for (const char c : name) {
    if (!IsAlnum(c) && c != '.' && c != '_' && c != '-') {
      return InvalidArgumentError(std::string(what) + " " + Printable(name) +
                                  " is not a plain file name ([A-Za-z0-9._-], no separator)");
    }
  }
  return OkStatus();
}

}  // namespace mq::format
