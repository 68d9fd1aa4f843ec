#include "name_validation.h"

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace mq::server {
namespace {

bool IsNameChar(char c) { return absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; }

// Renders untrusted text for an error message without control bytes or unbounded length.
std::string Printable(absl::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u >= 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  if (s.size() > 64) out += "...";
  return out;
}

}  // namespace

absl::Status ValidateName(absl::string_view name) {
  if (name.empty()) return absl::InvalidArgumentError("name is empty");
  if (name.size() > kMaxNameBytes) {
    return absl::InvalidArgumentError(absl::StrCat("name is ", name.size(), " bytes, at most ", kMaxNameBytes));
  }
  for (char c : name) {
    unsigned char u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return absl::InvalidArgumentError(absl::StrCat("name \"", Printable(name), "\" contains a control character"));
    }
    if (c == '/' || c == '\\') {
      return absl::InvalidArgumentError(absl::StrCat("name \"", Printable(name), "\" contains a path separator"));
    }
    if (!IsNameChar(c)) {
      return absl::InvalidArgumentError(
          absl::StrCat("name \"", Printable(name), "\" may only contain letters, digits, '.', '_' and '-'"));
    }
  }
  if (!absl::ascii_isalnum(static_cast<unsigned char>(name[0]))) {
    return absl::InvalidArgumentError(absl::StrCat("name \"", Printable(name), "\" must start with a letter or digit"));
  }
  if (name.find("..") != absl::string_view::npos) {
    return absl::InvalidArgumentError(absl::StrCat("name \"", Printable(name), "\" contains \"..\""));
  }
  return absl::OkStatus();
}

absl::Status ValidateFilePath(absl::string_view path) {
  if (path.empty()) return absl::InvalidArgumentError("file path is empty");
  if (path.size() > kMaxPathBytes) {
    return absl::InvalidArgumentError(absl::StrCat("file path is ", path.size(), " bytes, at most ", kMaxPathBytes));
  }
  int components = 0;
  for (absl::string_view part : absl::StrSplit(path, '/')) {
    ++components;
    if (part.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("file path \"", Printable(path), "\" has an empty component (leading, trailing or double '/')"));
    }
    if (part == "." || part == "..") {
      return absl::InvalidArgumentError(absl::StrCat("file path \"", Printable(path), "\" contains \"", part, "\""));
    }
    if (part.size() > kMaxNameBytes) {
      return absl::InvalidArgumentError(absl::StrCat("file path \"", Printable(path), "\" has a component over ", kMaxNameBytes, " bytes"));
    }
    for (char c : part) {
      if (!IsNameChar(c)) {
        return absl::InvalidArgumentError(absl::StrCat(
            "file path \"", Printable(path), "\" may only contain letters, digits, '.', '_', '-' and '/'"));
      }
    }
  }
  if (components > kMaxPathComponents) {
    return absl::InvalidArgumentError(absl::StrCat("file path \"", Printable(path), "\" is deeper than ", kMaxPathComponents));
  }
  return absl::OkStatus();
}

absl::StatusOr<ArtifactRef> ParseRef(absl::string_view ref) {
  ArtifactRef out;
  auto colon = ref.find(':');
  absl::string_view name = ref.substr(0, colon);
  absl::Status s = ValidateName(name);
  if (!s.ok()) return s;
  out.name = std::string(name);
  if (colon == absl::string_view::npos) return out;
  absl::string_view v = ref.substr(colon + 1);
  if (!v.empty() && v[0] == '0' && v.size() > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("reference \"", Printable(ref), "\": a version is written without leading zeros (1..", kMaxVersion, ")"));
  }
  if (v.empty() || v.size() > 10 || v[0] == '0') {
    return absl::InvalidArgumentError(absl::StrCat("reference \"", Printable(ref), "\": version must be 1..", kMaxVersion));
  }
  int64_t version = 0;
  for (char c : v) {
    if (c < '0' || c > '9') {
      return absl::InvalidArgumentError(absl::StrCat("reference \"", Printable(ref), "\": version must be a decimal number"));
    }
    version = version * 10 + (c - '0');
  }
  if (version > kMaxVersion) {
    return absl::InvalidArgumentError(absl::StrCat("reference \"", Printable(ref), "\": version must be 1..", kMaxVersion));
  }
  out.version = version;
  return out;
}

std::string FormatRef(absl::string_view name, int64_t version) { return absl::StrCat(name, ":", version); }

absl::Status ValidateJobId(absl::string_view id) {
  bool ok = id.size() == 18 && id.substr(0, 2) == "j-";
  for (size_t i = 2; ok && i < id.size(); ++i) {
    char c = id[i];
    ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("\"", Printable(id), "\" is not a job id (j-<16 hex>)"));
  return absl::OkStatus();
}

}  // namespace mq::server
