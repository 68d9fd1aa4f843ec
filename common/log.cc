#include "log.h"

#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cmath>
#include <cstdio>
#include <mutex>

#include <algorithm>

#include <google/protobuf/stubs/logging.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace mq {
namespace {

std::atomic<int> g_level{static_cast<int>(LogLevel::kInfo)};
std::atomic<int> g_format{static_cast<int>(LogFormat::kText)};
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

// A JSON string: quotes, backslash and control characters escaped, bytes that are not valid UTF-8
// replaced by U+FFFD, so every line parses whatever a value held.
void AppendJsonString(std::string* out, absl::string_view v) {
  out->push_back('"');
  size_t i = 0;
  while (i < v.size()) {
    const unsigned char c = static_cast<unsigned char>(v[i]);
    if (c < 0x80) {
      if (c == '"') out->append("\\\"");
      else if (c == '\\') out->append("\\\\");
      else if (c < 0x20 || c == 0x7f) out->append(absl::StrFormat("\\u%04x", c));
      else out->push_back(static_cast<char>(c));
      ++i;
      continue;
    }
    const size_t n = (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 0;
    bool ok = n != 0 && i + n <= v.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<unsigned char>(v[i + k]) & 0xC0) == 0x80;
    if (ok) {
      out->append(v.data() + i, n);
      i += n;
    } else {
      out->append("\\ufffd");
      ++i;
    }
  }
  out->push_back('"');
}

using Fields = std::vector<std::pair<std::string, std::string>>;
thread_local Fields t_context;  // LogContext scopes of this thread, outermost first
std::mutex g_process_mu;
Fields* g_process_fields = new Fields();  // never destroyed: used by static destructors

// "Bearer <credential>" anywhere in a text (an echoed header, an error message) keeps the word
// and loses the credential.
std::string ScrubBearer(absl::string_view v) {
  std::string out;
  size_t i = 0;
  while (i < v.size()) {
    const size_t at = absl::AsciiStrToLower(v.substr(i)).find("bearer ");
    if (at == std::string::npos) break;
    size_t j = i + at + 7;
    while (j < v.size() && v[j] == ' ') ++j;
    size_t end = j;
    while (end < v.size() && v[end] != ' ' && v[end] != '"' && v[end] != '\'' && v[end] != ',' && v[end] != '\n') ++end;
    absl::StrAppend(&out, v.substr(i, j - i), end > j ? "[redacted]" : "");
    i = end;
  }
  out.append(v.data() + i, v.size() - i);
  return out;
}

bool HasBearer(absl::string_view v) { return absl::AsciiStrToLower(v).find("bearer ") != std::string::npos; }

}  // namespace

LogContext::LogContext(std::initializer_list<std::pair<absl::string_view, absl::string_view>> fields)
    : restore_size_(t_context.size()) {
  for (const auto& [k, v] : fields) t_context.emplace_back(std::string(k), std::string(v));
}

LogContext::~LogContext() { t_context.resize(restore_size_); }

void SetLogProcessField(absl::string_view key, absl::string_view value) {
  std::lock_guard<std::mutex> lock(g_process_mu);
  Fields& f = *g_process_fields;
  f.erase(std::remove_if(f.begin(), f.end(), [&](const auto& kv) { return kv.first == key; }), f.end());
  if (!value.empty()) f.emplace_back(std::string(key), std::string(value));
}

bool IsSecretLogKey(absl::string_view key) {
  const std::string k = absl::AsciiStrToLower(key);
  for (absl::string_view exact : {"token", "password", "passwd", "secret", "authorization", "bearer", "api_key", "apikey",
                                  "private_key", "credentials"})
    if (k == exact) return true;
  for (absl::string_view suffix : {"_token", "-token", "_password", "_secret", "_api_key"})
    if (absl::EndsWith(k, suffix)) return true;
  return false;
}

void SetLogLevel(LogLevel level) { g_level.store(static_cast<int>(level)); }
void SetLogFormat(LogFormat format) { g_format.store(static_cast<int>(format)); }

bool ParseLogFormat(absl::string_view text, LogFormat* format) {
  if (text == "text") *format = LogFormat::kText;
  else if (text == "json") *format = LogFormat::kJson;
  else return false;
  return true;
}

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
  const std::string ts = absl::FormatTime("%Y-%m-%dT%H:%M:%E3SZ", absl::Now(), absl::UTCTimeZone());
  json_ = g_format.load(std::memory_order_relaxed) == static_cast<int>(LogFormat::kJson);
  std::string scrubbed;
  if (HasBearer(message)) {
    scrubbed = ScrubBearer(message);
    message = scrubbed;
  }
  if (json_) {
    line_ = absl::StrCat("{\"ts\":\"", ts, "\",\"level\":\"", LevelName(level), "\",\"component\":");
    AppendJsonString(&line_, component);
    line_.append(",\"msg\":");
    AppendJsonString(&line_, message);
    return;
  }
  line_ = absl::StrCat("ts=", ts, " level=", LevelName(level), " component=", component, " msg=");
  AppendValue(&line_, message);
}

Log::~Log() {
  if (!enabled_) return;
  // Context fields the line did not set: the thread's innermost scope first, then the process's.
  auto add = [this](const std::string& key, const std::string& value) {
    if (std::find(keys_.begin(), keys_.end(), key) != keys_.end()) return;
    Kv(key, absl::string_view(value));
  };
  for (auto it = t_context.rbegin(); it != t_context.rend(); ++it) add(it->first, it->second);
  {
    std::lock_guard<std::mutex> lock(g_process_mu);
    for (const auto& [k, v] : *g_process_fields) add(k, v);
  }
  if (json_) line_.push_back('}');
  line_.push_back('\n');
  // One write keeps concurrent lines whole; a short write on stderr is not worth retrying.
  ssize_t ignored = ::write(STDERR_FILENO, line_.data(), line_.size());
  (void)ignored;
}

// The key with its separator: ` key=` (text) or `,"key":` (JSON).
void Log::AppendKey(absl::string_view key) {
  keys_.emplace_back(key);
  if (json_) {
    line_.push_back(',');
    AppendJsonString(&line_, key);
    line_.push_back(':');
  } else {
    absl::StrAppend(&line_, " ", key, "=");
  }
}

Log& Log::Kv(absl::string_view key, absl::string_view value) {
  if (!enabled_) return *this;
  AppendKey(key);
  // Secrets never reach a log line, whoever logs them.
  std::string scrubbed;
  if (IsSecretLogKey(key)) {
    value = "[redacted]";
  } else if (HasBearer(value)) {
    scrubbed = ScrubBearer(value);
    value = scrubbed;
  }
  if (json_) AppendJsonString(&line_, value);
  else AppendValue(&line_, value);
  return *this;
}

Log& Log::Kv(absl::string_view key, int64_t value) {
  if (!enabled_) return *this;
  AppendKey(key);
  absl::StrAppend(&line_, value);
  return *this;
}

Log& Log::Kv(absl::string_view key, uint64_t value) {
  if (!enabled_) return *this;
  AppendKey(key);
  absl::StrAppend(&line_, value);
  return *this;
}

Log& Log::Kv(absl::string_view key, double value) {
  if (!enabled_) return *this;
  const std::string text = absl::StrFormat("%.4g", value);
  // JSON has no NaN or infinity: those go out as strings.
  if (json_ && !std::isfinite(value)) return Kv(key, absl::string_view(text));
  AppendKey(key);
  line_.append(text);
  return *this;
}

Log& Log::Kv(absl::string_view key, const absl::Status& status) {
  if (!enabled_) return *this;
  return Kv(key, status.ToString());
}

namespace {
void ProtobufLogHandler(google::protobuf::LogLevel level, const char* filename, int line, const std::string& message) {
  const LogLevel ours = level <= google::protobuf::LOGLEVEL_INFO      ? LogLevel::kDebug
                        : level == google::protobuf::LOGLEVEL_WARNING ? LogLevel::kWarning
                                                                      : LogLevel::kError;
  Log(ours, "protobuf").Kv("detail", message).Kv("source", absl::StrCat(filename ? filename : "?", ":", line));
}
}  // namespace

void RouteProtobufLogs() { google::protobuf::SetLogHandler(&ProtobufLogHandler); }

}  // namespace mq
