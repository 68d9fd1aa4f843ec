// The logger's JSON lines (--log-format json) are valid JSON whatever the values hold: quotes,
// control characters, bytes that are not UTF-8, non-finite numbers.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "log.h"
#include "mambaquant/v1/inference.pb.h"
#include "test_support.h"

namespace mq {
namespace {

// Runs `body` with stderr redirected to a file; returns what was written.
template <typename F>
std::string CaptureStderr(const std::string& path, F body) {
  std::fflush(stderr);
  const int saved = ::dup(STDERR_FILENO);
  FILE* f = std::fopen(path.c_str(), "w");
  ::dup2(::fileno(f), STDERR_FILENO);
  body();
  std::fflush(stderr);
  ::dup2(saved, STDERR_FILENO);
  ::close(saved);
  std::fclose(f);
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(LogTest, JsonLinesParseWithEveryKindOfValue) {
  test::TempDir dir;
  SetLogFormat(LogFormat::kJson);
  SetLogComponent("test");
  const std::string out = CaptureStderr(dir.Sub("log.txt"), [] {
    Log(LogLevel::kInfo, "quote \" backslash \\ newline \n tab \t bell \x07")
        .Kv("job", "j-1")
        .Kv("bad_utf8", std::string("a\xff\xc3(b"))
        .Kv("emoji", "🙂")
        .Kv("count", int64_t{-3})
        .Kv("big", uint64_t{18446744073709551615ull})
        .Kv("ratio", 0.25)
        .Kv("nan", std::numeric_limits<double>::quiet_NaN())
        .Kv("ok", true)
        .Kv("error", absl::InvalidArgumentError("bad \"thing\""));
    Log(LogLevel::kDebug, "below the level: not written");
  });
  SetLogFormat(LogFormat::kText);
  std::istringstream lines(out);
  std::string line;
  ASSERT_TRUE(std::getline(lines, line)) << out;
  const auto j = nlohmann::json::parse(line);  // throws (fails the test) when not JSON
  EXPECT_EQ(j["level"], "info");
  EXPECT_EQ(j["component"], "test");
  EXPECT_EQ(j["msg"], "quote \" backslash \\ newline \n tab \t bell \x07");
  EXPECT_EQ(j["job"], "j-1");
  EXPECT_EQ(j["bad_utf8"], "a\xEF\xBF\xBD\xEF\xBF\xBD(b");  // U+FFFD for each byte that is not UTF-8
  EXPECT_EQ(j["emoji"], "🙂");
  EXPECT_EQ(j["count"], -3);
  EXPECT_EQ(j["big"], 18446744073709551615ull);
  EXPECT_EQ(j["ratio"], 0.25);
  EXPECT_EQ(j["nan"], "nan");
  EXPECT_EQ(j["error"], "INVALID_ARGUMENT: bad \"thing\"");
  EXPECT_FALSE(std::getline(lines, line)) << "a debug line was written: " << line;
}

// A request that fails to parse (a string field that is not UTF-8) makes protobuf log an error;
// RouteProtobufLogs sends it through Log, so it is a JSON line like the others.
TEST(LogTest, ProtobufsOwnLinesFollowTheLogFormat) {
  test::TempDir dir;
  SetLogFormat(LogFormat::kJson);
  RouteProtobufLogs();
  mambaquant::v1::GenerateRequest req;
  req.set_prompt("ok");
  std::string wire = req.SerializeAsString();
  wire.back() = '\xff';  // the prompt's last byte
  bool parsed = true;
  const std::string out = CaptureStderr(dir.Sub("log.txt"), [&] { parsed = req.ParseFromString(wire); });
  SetLogFormat(LogFormat::kText);
  EXPECT_FALSE(parsed);
  std::istringstream lines(out);
  std::string line;
  int protobuf_lines = 0;
  while (std::getline(lines, line)) {
    const auto j = nlohmann::json::parse(line);  // throws (fails the test) when not JSON
    if (j["msg"] == "protobuf") {
      ++protobuf_lines;
      EXPECT_EQ(j["level"], "error");
      EXPECT_NE(j["detail"].get<std::string>().find("UTF-8"), std::string::npos) << line;
    }
  }
  EXPECT_GE(protobuf_lines, 1) << out;
}

TEST(LogTest, FormatNamesParse) {
  LogFormat f;
  EXPECT_TRUE(ParseLogFormat("json", &f));
  EXPECT_EQ(f, LogFormat::kJson);
  EXPECT_TRUE(ParseLogFormat("text", &f));
  EXPECT_EQ(f, LogFormat::kText);
  EXPECT_FALSE(ParseLogFormat("xml", &f));
}

}  // namespace
}  // namespace mq
