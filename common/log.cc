#include "log.h"

#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mq {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::mutex g_component_mu;
std::string* g_component = new std::string("mq");  // never destroyed: used by static destructors

const char* LevelName(LogLevel level) {
  switch (level) {
    case LogLevel::kDebug: return "debug";
    case LogLevel::kInfo: return "info";
    case LogLevel::kWarning: return "warn";
    case LogLevel::kError: return "error";
  }
  return "info";
}

// Quotes values with spaces, quotes, '=' or control characters; escapes the latter.
void AppendValue(std::string* out, absl::string_view value) {
  bool quote = value.empty();
  for (char c : value) {
    if (c == ' ' || c == '"' || c == '=' || static_cast<unsigned char>(c) < 0x20 || c == '\\') {
      quote = true;
      break;
    }
  }
  if (!quote) {
    out->append(value.data(), value.size());
    return;
  }
  out->push_back('"');
  for (char c : value) {
    switch (c) {
      case '"': out->append("\\\""); break;
      case '\\': out->append("\\\\"); break;
      case '\n': out->append("\\n"); break;
      case '\t': out->append("\\t"); break;
      case '\r': out->append("\\r"); break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof(buf), "\\x%02x", static_cast<unsigned char>(c));
          out->append(buf);
        } else {
          out->push_back(c);
        }
    }
  }
  out->push_back('"');
}

}  // namespace

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }

void SetLogComponent(absl::string_view component) {
  std::lock_guard<std::mutex> lock(g_component_mu);
  *g_component = std::string(component);
}

bool ParseLogLevel(absl::string_view text, LogLevel* level) {
  if (text == "debug") *level = LogLevel::kDebug;
  else if (text == "info") *level = LogLevel::kInfo;
  else if (text == "warn" || text == "warning") *level = LogLevel::kWarning;
  else if (text == "error") *level = LogLevel::kError;
  else return false;
  return true;
}

Log::Log(LogLevel level, absl::string_view message)
    : enabled_(static_cast<int>(level) >= g_level.load(std::memory_order_relaxed)) {
  if (!enabled_) return;
  std::string component;
  {
    std::lock_guard<std::mutex> lock(g_component_mu);
    component = *g_component;
  }
  line_ = absl::StrCat("ts=", absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone()),
                       " level=", LevelName(level), " component=", component, " msg=");
  AppendValue(&line_, message);
}

Log::~Log() {
  if (!enabled_) return;
  line_.push_back('\n');
  // One write keeps concurrent lines whole; a short write on stderr is not worth retrying.
  ssize_t ignored = ::write(STDERR_FILENO, line_.data(), line_.size());
  (void)ignored;
}

Log& Log::Kv(absl::string_view key, absl::string_view value) {
  if (!enabled_) return *this;
  absl::StrAppend(&line_, " ", key, "=");
  AppendValue(&line_, value);
  return *this;
}

Log& Log::Kv(absl::string_view key, int64_t value) {
  if (enabled_) absl::StrAppend(&line_, " ", key, "=", value);
  return *this;
}

Log& Log::Kv(absl::string_view key, uint64_t value) {
  if (enabled_) absl::StrAppend(&line_, " ", key, "=", value);
  return *this;
}

Log& Log::Kv(absl::string_view key, double value) {
  if (enabled_) absl::StrAppend(&line_, " ", key, "=", absl::StrFormat("%.4g", value));
  return *this;
}

Log& Log::Kv(absl::string_view key, const absl::Status& status) {
  if (!enabled_) return *this;
  return Kv(key, status.ToString());
}

}  // namespace mq
