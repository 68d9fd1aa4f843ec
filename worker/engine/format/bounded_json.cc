#include "format/bounded_json.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace mq::format {

Status CheckJsonNesting(std::string_view text, size_t max_depth) {
  size_t depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > max_depth) {
        return InvalidArgumentError("JSON nests deeper than " + std::to_string(max_depth) + " levels (at byte " +
                                    std::to_string(i) + ")");
      }
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return OkStatus();
}

StatusOr<nlohmann::json> ParseJson(std::string_view text, const std::string& source, uint64_t max_bytes,
                                   StatusCode code, size_t max_depth) {
  if (text.size() > max_bytes) {
    return Status(code, source + ": " + std::to_string(text.size()) + " bytes, more than the limit of " +
                            std::to_string(max_bytes));
  }
  if (text.find_first_not_of(" \t\r\n") == std::string_view::npos) {
    return Status(code, source + ": empty file, expected JSON");
  }
  Status nesting = CheckJsonNesting(text, max_depth);
  if (!nesting.ok()) return Status(code, source + ": " + nesting.message());
  nlohmann::json j = nlohmann::json::parse(text.begin(), text.end(), nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return Status(code, source + ": not valid JSON");
  return j;
}

StatusOr<std::string> ReadFileBounded(const std::string& path, uint64_t max_bytes, StatusCode code) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    return Status(err == ENOENT ? StatusCode::kNotFound : StatusCode::kFailedPrecondition,
                  path + ": cannot open: " + std::strerror(err));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return FailedPreconditionError(path + ": not a regular file");
  }
  if (static_cast<uint64_t>(st.st_size) > max_bytes) {
    ::close(fd);
    return Status(code, path + ": " + std::to_string(st.st_size) + " bytes, more than the limit of " +
                            std::to_string(max_bytes));
  }
  // Read to end of file, never past the bound: the file may grow after fstat.
  std::string text(static_cast<size_t>(st.st_size), '\0');
  size_t got = 0;
  while (got < text.size()) {
    const ssize_t n = ::read(fd, text.data() + got, text.size() - got);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return FailedPreconditionError(path + ": read error: " + std::strerror(err));
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  ::close(fd);
  text.resize(got);
  return text;
}

}  // namespace mq::format
