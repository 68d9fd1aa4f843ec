// A small structured logger: one line per event on stderr, "key=value" pairs after the message,
// or one JSON object per line (SetLogFormat(kJson): {"ts":…,"level":…,"component":…,"msg":…,
// "key":value…}) for log collectors.
//
//   Log(LogLevel::kInfo, "job assigned").Kv("job", id).Kv("worker", worker);
//
// The line is written when the temporary is destroyed, in one write(2), so lines from concurrent
// threads never interleave.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <utility>
#include <vector>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"

namespace mq {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3 };

enum class LogFormat { kText = 0, kJson = 1 };

// Process-wide minimum level (default kInfo), line format (default text) and component name
// (e.g. "server").
void SetLogLevel(LogLevel level);
void SetLogFormat(LogFormat format);
bool ParseLogFormat(absl::string_view text, LogFormat* format);
void SetLogComponent(absl::string_view component);
bool ParseLogLevel(absl::string_view text, LogLevel* level);

// Fields added to every line logged on this thread while the scope lives, so that the lines of
// code that knows nothing of the job or request it runs for still say which (blob cache,
// executor, engine wrappers):
//
//   LogContext ctx({{"job", job_id}, {"model", model_ref}});
//
// A field the line sets itself wins; an inner scope's field wins over an outer one's. Scopes
// nest and must end in reverse order (they are stack objects). Values are copied.
class LogContext {
 public:
  LogContext(std::initializer_list<std::pair<absl::string_view, absl::string_view>> fields);
  ~LogContext();
  LogContext(const LogContext&) = delete;
  LogContext& operator=(const LogContext&) = delete;

 private:
  size_t restore_size_;
};

// A field on every line of the process (e.g. the worker's name), after the line's own fields
// and its thread's LogContext fields; an empty value removes it.
void SetLogProcessField(absl::string_view key, absl::string_view value);

// Sends protobuf's own log lines (e.g. "String field ... contains invalid UTF-8 data" when a request
// fails to parse) through Log, so that they follow --log-format instead of appearing as raw
// "[libprotobuf ERROR ...]" lines among JSON ones. Call once at startup.
void RouteProtobufLogs();

// Whether a field of this name carries a secret (token, password, authorization, ...): its value
// is written as "[redacted]", as is any value that starts with "Bearer ".
bool IsSecretLogKey(absl::string_view key);

class Log {
 public:
  Log(LogLevel level, absl::string_view message);
  ~Log();
  Log(const Log&) = delete;
  Log& operator=(const Log&) = delete;

  Log& Kv(absl::string_view key, absl::string_view value);
  Log& Kv(absl::string_view key, const char* value) { return Kv(key, absl::string_view(value)); }
  Log& Kv(absl::string_view key, const std::string& value) { return Kv(key, absl::string_view(value)); }
  Log& Kv(absl::string_view key, int64_t value);
  Log& Kv(absl::string_view key, int value) { return Kv(key, static_cast<int64_t>(value)); }
  Log& Kv(absl::string_view key, uint64_t value);
  Log& Kv(absl::string_view key, double value);
  Log& Kv(absl::string_view key, bool value) { return Kv(key, value ? "true" : "false"); }
  Log& Kv(absl::string_view key, const absl::Status& status);

 private:
  void AppendKey(absl::string_view key);
  bool enabled_;
  std::vector<std::string> keys_;  // the line's own fields, which context fields do not repeat
  bool json_ = false;
  std::string line_;
};

}  // namespace mq
