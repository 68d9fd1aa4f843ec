// The logger's context fields (LogContext, SetLogProcessField) and secret redaction: every
// line in a scope says which job/model it concerns without the line naming it, a line's own
// field wins, scopes are per thread, and secrets never reach a line whoever logs them.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_split.h"
#include "log.h"

namespace mq {
namespace {

// Runs `body` with stderr redirected to a temp file; returns the JSON lines written.
template <typename F>
std::vector<nlohmann::json> CaptureJsonLines(F body) {
  char path[] = "/tmp/mq-log-context-XXXXXX";
  const int fd = ::mkstemp(path);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  SetLogFormat(LogFormat::kJson);
  body();
  SetLogFormat(LogFormat::kText);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fd);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  ::unlink(path);
  std::vector<nlohmann::json> lines;
  for (absl::string_view l : absl::StrSplit(ss.str(), '\n', absl::SkipEmpty())) lines.push_back(nlohmann::json::parse(l));
  return lines;
}

size_t Occurrences(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

TEST(LogContextTest, ScopedFieldsReachEveryLineOfTheScopeOnly) {
  auto lines = CaptureJsonLines([] {
    Log(LogLevel::kInfo, "before");
    {
      LogContext job({{"job", "j-1"}, {"model", "tiny:1"}});
      Log(LogLevel::kInfo, "fetching");
      {
        LogContext inner({{"model", "tiny:2"}, {"request", "r-9"}});
        Log(LogLevel::kInfo, "inner");
      }
      Log(LogLevel::kInfo, "own field wins").Kv("model", "explicit:3");
    }
    Log(LogLevel::kInfo, "after");
  });
  ASSERT_EQ(lines.size(), 5u);
  EXPECT_FALSE(lines[0].contains("job"));
  EXPECT_EQ(lines[1]["job"], "j-1");
  EXPECT_EQ(lines[1]["model"], "tiny:1");
  EXPECT_EQ(lines[2]["job"], "j-1");
  EXPECT_EQ(lines[2]["model"], "tiny:2");  // the inner scope wins
  EXPECT_EQ(lines[2]["request"], "r-9");
  EXPECT_EQ(lines[3]["model"], "explicit:3");
  EXPECT_FALSE(lines[3].contains("request"));  // the inner scope ended
  EXPECT_FALSE(lines[4].contains("job"));
  EXPECT_FALSE(lines[4].contains("model"));
}

TEST(LogContextTest, NoFieldTwiceOnALine) {
  char path[] = "/tmp/mq-log-dup-XXXXXX";
  const int fd = ::mkstemp(path);
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  ::dup2(fd, STDERR_FILENO);
  {
    LogContext ctx({{"job", "j-ctx"}});
    Log(LogLevel::kInfo, "both").Kv("job", "j-own");
  }
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  ::close(fd);
  std::ifstream in(path);
  std::string line;
  std::getline(in, line);
  ::unlink(path);
  EXPECT_EQ(Occurrences(line, "job="), 1u) << line;
  EXPECT_NE(line.find("job=j-own"), std::string::npos) << line;
}

TEST(LogContextTest, ScopesArePerThreadAndProcessFieldsReachEveryThread) {
  SetLogProcessField("worker", "w-test");
  auto lines = CaptureJsonLines([] {
    LogContext job({{"job", "j-main"}});
    std::thread other([] { Log(LogLevel::kInfo, "other thread"); });
    other.join();
    Log(LogLevel::kInfo, "main thread");
  });
  SetLogProcessField("worker", "");
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_FALSE(lines[0].contains("job"));
  EXPECT_EQ(lines[0]["worker"], "w-test");
  EXPECT_EQ(lines[1]["job"], "j-main");
  EXPECT_EQ(lines[1]["worker"], "w-test");
  auto after = CaptureJsonLines([] { Log(LogLevel::kInfo, "removed"); });
  ASSERT_EQ(after.size(), 1u);
  EXPECT_FALSE(after[0].contains("worker"));
}

TEST(LogRedactionTest, SecretsNeverReachALine) {
  const std::string secret = "s3cr3t-0123456789abcdef";
  auto lines = CaptureJsonLines([&] {
    Log(LogLevel::kInfo, "flags").Kv("token", secret).Kv("worker_token", secret).Kv("password", secret)
        .Kv("Authorization", secret);
    Log(LogLevel::kWarning, "header").Kv("metadata", "authorization: Bearer " + secret + ", x-request-id: 7");
    Log(LogLevel::kError, "rejected Bearer " + secret + " for /x");
    LogContext ctx({{"token", secret}});
    Log(LogLevel::kInfo, "in a context with a token");
  });
  ASSERT_EQ(lines.size(), 4u);
  for (const auto& l : lines) EXPECT_EQ(l.dump().find(secret), std::string::npos) << l.dump();
  EXPECT_EQ(lines[0]["token"], "[redacted]");
  EXPECT_EQ(lines[0]["worker_token"], "[redacted]");
  EXPECT_EQ(lines[0]["Authorization"], "[redacted]");
  EXPECT_EQ(lines[1]["metadata"], "authorization: Bearer [redacted], x-request-id: 7");
  EXPECT_EQ(lines[2]["msg"], "rejected Bearer [redacted] for /x");
  EXPECT_EQ(lines[3]["token"], "[redacted]");
}

TEST(LogRedactionTest, OrdinaryFieldsAreKept) {
  auto lines = CaptureJsonLines([] {
    Log(LogLevel::kInfo, "counts").Kv("tokens_file", "/etc/mq/tokens").Kv("prompt_tokens", 5).Kv("tokens", int64_t{2})
        .Kv("note", "bearer of news");
  });
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_EQ(lines[0]["tokens_file"], "/etc/mq/tokens");
  EXPECT_EQ(lines[0]["prompt_tokens"], 5);
  EXPECT_EQ(lines[0]["tokens"], 2);
  EXPECT_EQ(lines[0]["note"], "bearer [redacted] news");  // a word after "bearer " is taken for a credential
}

TEST(LogLevelTest, LinesBelowTheLevelAreNotWritten) {
  SetLogLevel(LogLevel::kWarning);
  auto lines = CaptureJsonLines([] {
    LogContext ctx({{"job", "j"}});
    Log(LogLevel::kDebug, "debug");
    Log(LogLevel::kInfo, "info");
    Log(LogLevel::kWarning, "warn");
    Log(LogLevel::kError, "error");
  });
  SetLogLevel(LogLevel::kInfo);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_EQ(lines[0]["level"], "warn");
  EXPECT_EQ(lines[1]["level"], "error");
}

}  // namespace
}  // namespace mq
