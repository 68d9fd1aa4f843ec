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
#include <string>
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
  bool json_ = false;
  std::string line_;
};

}  // namespace mq
