#include "name_validation.h"

#include <gtest/gtest.h>

namespace mq::server {
namespace {

TEST(NameValidation, AcceptsTypicalNames) {
  for (const char* name : {"mamba-tiny", "mamba_130m.v2", "A", "m1", "model-mambaquant-w8a8"}) {
    EXPECT_TRUE(ValidateName(name).ok()) << name;
  }
}

TEST(NameValidation, RejectsPathsDotsAndControlCharacters) {
  for (std::string name : {std::string(""), std::string("a/b"), std::string("a\\b"), std::string(".."),
                           std::string("a..b"), std::string(".hidden"), std::string("-x"), std::string("a\nb"),
                           std::string("a\tb"), std::string("a\x7f"), std::string("a b"), std::string("caf\xc3\xa9"),
                           std::string("a:b"), std::string(129, 'a'), std::string("a\0b", 3)}) {
    absl::Status s = ValidateName(name);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << name;
  }
}

TEST(NameValidation, ErrorMessagesNameTheRuleAndEscapeControlBytes) {
  EXPECT_NE(ValidateName("a/b").message().find("path separator"), std::string::npos);
  EXPECT_NE(ValidateName("a..b").message().find(".."), std::string::npos);
  std::string msg(ValidateName("a\x01" "b").message());
  EXPECT_NE(msg.find("control character"), std::string::npos);
  EXPECT_NE(msg.find("\\x01"), std::string::npos);
  EXPECT_EQ(msg.find('\x01'), std::string::npos);
}

TEST(FilePathValidation, AcceptsRelativeNestedPaths) {
  EXPECT_TRUE(ValidateFilePath("config.json").ok());
  EXPECT_TRUE(ValidateFilePath("shards/model-00001-of-00002.safetensors").ok());
}

TEST(FilePathValidation, RejectsTraversalAbsoluteAndEmptyComponents) {
  for (const char* p : {"", "/etc/passwd", "../x", "a/../b", "a/./b", "a//b", "a/", ".", "a\\b", "a b", "a/\x01"}) {
    EXPECT_EQ(ValidateFilePath(p).code(), absl::StatusCode::kInvalidArgument) << p;
  }
  EXPECT_EQ(ValidateFilePath("a/b/c/d/e/f/g/h/i").code(), absl::StatusCode::kInvalidArgument);
}

TEST(RefParsing, NameAloneMeansLatest) {
  auto ref = ParseRef("mamba-tiny");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->name, "mamba-tiny");
  EXPECT_EQ(ref->version, 0);
}

TEST(RefParsing, ExplicitVersion) {
  auto ref = ParseRef("mamba-tiny:12");
  ASSERT_TRUE(ref.ok());
  EXPECT_EQ(ref->version, 12);
  EXPECT_EQ(FormatRef(ref->name, ref->version), "mamba-tiny:12");
}

TEST(RefParsing, RejectsBadVersions) {
  for (const char* r : {"m:", "m:0", "m:01", "m:-1", "m:+1", "m:1.5", "m:abc", "m:2147483648", "m:1:2", "../m:1"}) {
    EXPECT_EQ(ParseRef(r).status().code(), absl::StatusCode::kInvalidArgument) << r;
  }
  // The message says what is wrong with each form.
  EXPECT_NE(ParseRef("m:01").status().message().find("without leading zeros"), absl::string_view::npos);
  EXPECT_NE(ParseRef("m:0").status().message().find("version must be 1..2147483647"), absl::string_view::npos);
  EXPECT_NE(ParseRef("m:abc").status().message().find("decimal number"), absl::string_view::npos);
}

TEST(JobIdValidation, AcceptsOnlyServerFormat) {
  EXPECT_TRUE(ValidateJobId("j-0123456789abcdef").ok());
  EXPECT_FALSE(ValidateJobId("j-0123456789ABCDEF").ok());
  EXPECT_FALSE(ValidateJobId("j-0123").ok());
  EXPECT_FALSE(ValidateJobId("../../etc/passwd").ok());
}

}  // namespace
}  // namespace mq::server
