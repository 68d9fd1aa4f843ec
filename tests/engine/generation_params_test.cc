// The ranges of a generation request (serve/generation_params.h): every bound accepted at its
// edge and refused just past it, NaN and infinities refused, messages naming field and range.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "serve/generation_params.h"

namespace mq::serve {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

using Edit = std::function<void(GenerationParams&)>;

Status Check(const Edit& edit) {
  GenerationParams p;
  edit(p);
  return ValidateGenerationParams(p);
}

void ExpectOk(const Edit& edit, const std::string& what) {
  const Status s = Check(edit);
  EXPECT_TRUE(s.ok()) << what << ": " << s.ToString();
}

// Refused as INVALID_ARGUMENT with a message holding every piece of `needles`.
void ExpectRefused(const Edit& edit, const std::string& what, const std::vector<std::string>& needles) {
  const Status s = Check(edit);
  ASSERT_EQ(s.code(), StatusCode::kInvalidArgument) << what << ": " << s.ToString();
  for (const std::string& n : needles) EXPECT_NE(s.message().find(n), std::string::npos) << what << ": " << s.message();
}

TEST(GenerationParamsTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidateGenerationParams(GenerationParams{}).ok());
  EXPECT_TRUE(ValidateForModel(GenerationParams{}, 4096).ok());
}

TEST(GenerationParamsTest, MaxNewTokens) {
  ExpectOk([](auto& p) { p.max_new_tokens = 1; }, "1");
  ExpectOk([](auto& p) { p.max_new_tokens = 4096; }, "4096");
  ExpectRefused([](auto& p) { p.max_new_tokens = 0; }, "0", {"max_new_tokens", "[1, 4096]", "got 0"});
  ExpectRefused([](auto& p) { p.max_new_tokens = 4097; }, "4097", {"max_new_tokens", "[1, 4096]", "got 4097"});
}

TEST(GenerationParamsTest, MinTokensUpToMaxNewTokens) {
  ExpectOk([](auto& p) { p.min_tokens = 0; }, "0");
  ExpectOk([](auto& p) { p.max_new_tokens = 20; p.min_tokens = 20; }, "= max_new_tokens");
  ExpectRefused([](auto& p) { p.min_tokens = -1; }, "-1", {"min_tokens", "got -1"});
  ExpectRefused([](auto& p) { p.max_new_tokens = 20; p.min_tokens = 21; }, "21",
                {"min_tokens", "max_new_tokens = 20", "got 21"});
}

TEST(GenerationParamsTest, Temperature) {
  ExpectOk([](auto& p) { p.sampling.temperature = 0; }, "0");
  ExpectOk([](auto& p) { p.sampling.temperature = 100; }, "100");
  ExpectRefused([](auto& p) { p.sampling.temperature = 250; }, "250", {"temperature must be in [0, 100], got 250"});
  ExpectRefused([](auto& p) { p.sampling.temperature = 100.0001f; }, "just over", {"temperature"});
  ExpectRefused([](auto& p) { p.sampling.temperature = -0.001f; }, "negative", {"temperature", "[0, 100]"});
  ExpectRefused([](auto& p) { p.sampling.temperature = kNaN; }, "NaN", {"temperature", "nan"});
  ExpectRefused([](auto& p) { p.sampling.temperature = kInf; }, "inf", {"temperature"});
}

TEST(GenerationParamsTest, TopP) {
  ExpectOk([](auto& p) { p.sampling.top_p = 1; }, "1");
  ExpectOk([](auto& p) { p.sampling.top_p = 1e-6f; }, "tiny");
  ExpectRefused([](auto& p) { p.sampling.top_p = 0; }, "0", {"top_p", "(0, 1]", "got 0"});
  ExpectRefused([](auto& p) { p.sampling.top_p = 1.0001f; }, "over 1", {"top_p", "(0, 1]"});
  ExpectRefused([](auto& p) { p.sampling.top_p = -0.5f; }, "negative", {"top_p"});
  ExpectRefused([](auto& p) { p.sampling.top_p = kNaN; }, "NaN", {"top_p"});
}

TEST(GenerationParamsTest, TopK) {
  ExpectOk([](auto& p) { p.sampling.top_k = 0; }, "0");
  ExpectOk([](auto& p) { p.sampling.top_k = 1000000; }, "1e6");
  ExpectRefused([](auto& p) { p.sampling.top_k = -1; }, "-1", {"top_k", "[0, 1000000]", "got -1"});
  ExpectRefused([](auto& p) { p.sampling.top_k = 1000001; }, "1e6+1", {"top_k", "[0, 1000000]", "got 1000001"});
}

TEST(GenerationParamsTest, MinP) {
  ExpectOk([](auto& p) { p.sampling.min_p = 0; }, "0");
  ExpectOk([](auto& p) { p.sampling.min_p = 1; }, "1");
  ExpectRefused([](auto& p) { p.sampling.min_p = -0.01f; }, "negative", {"min_p", "[0, 1]"});
  ExpectRefused([](auto& p) { p.sampling.min_p = 1.01f; }, "over 1", {"min_p", "[0, 1]"});
  ExpectRefused([](auto& p) { p.sampling.min_p = kNaN; }, "NaN", {"min_p"});
}

TEST(GenerationParamsTest, RepetitionPenalty) {
  ExpectOk([](auto& p) { p.sampling.repetition_penalty = 10; }, "10");
  ExpectOk([](auto& p) { p.sampling.repetition_penalty = 1e-3f; }, "small");
  ExpectRefused([](auto& p) { p.sampling.repetition_penalty = 0; }, "0", {"repetition_penalty", "(0, 10]", "got 0"});
  ExpectRefused([](auto& p) { p.sampling.repetition_penalty = 10.01f; }, "over", {"repetition_penalty", "(0, 10]"});
  ExpectRefused([](auto& p) { p.sampling.repetition_penalty = -1; }, "negative", {"repetition_penalty"});
  ExpectRefused([](auto& p) { p.sampling.repetition_penalty = kNaN; }, "NaN", {"repetition_penalty"});
}

TEST(GenerationParamsTest, PresenceAndFrequencyPenalties) {
  ExpectOk([](auto& p) { p.sampling.presence_penalty = -2; p.sampling.frequency_penalty = 2; }, "edges");
  ExpectOk([](auto& p) { p.sampling.presence_penalty = 2; p.sampling.frequency_penalty = -2; }, "edges");
  ExpectRefused([](auto& p) { p.sampling.presence_penalty = 2.01f; }, "over", {"presence_penalty", "[-2, 2]"});
  ExpectRefused([](auto& p) { p.sampling.presence_penalty = -2.01f; }, "under", {"presence_penalty", "[-2, 2]"});
  ExpectRefused([](auto& p) { p.sampling.presence_penalty = kNaN; }, "NaN", {"presence_penalty"});
  ExpectRefused([](auto& p) { p.sampling.frequency_penalty = 2.01f; }, "over", {"frequency_penalty", "[-2, 2]"});
  ExpectRefused([](auto& p) { p.sampling.frequency_penalty = -2.01f; }, "under", {"frequency_penalty", "[-2, 2]"});
  ExpectRefused([](auto& p) { p.sampling.frequency_penalty = -kInf; }, "-inf", {"frequency_penalty"});
}

TEST(GenerationParamsTest, StopStrings) {
  ExpectOk([](auto& p) { p.stop = std::vector<std::string>(16, "x"); }, "16 strings");
  ExpectOk([](auto& p) { p.stop = {std::string(256, 'a'), "\xE4\xB8\x96", "y"}; }, "256 bytes, CJK");
  ExpectRefused([](auto& p) { p.stop = std::vector<std::string>(17, "x"); }, "17 strings",
                {"stop", "at most 16", "got 17"});
  ExpectRefused([](auto& p) { p.stop = {"ok", ""}; }, "empty", {"stop[1]", "1..256", "got 0"});
  ExpectRefused([](auto& p) { p.stop = {std::string(257, 'a')}; }, "257 bytes", {"stop[0]", "1..256", "got 257"});
  ExpectRefused([](auto& p) { p.stop = {"ab\xC3"}; }, "truncated UTF-8", {"stop[0]", "UTF-8", "byte 2"});
  ExpectRefused([](auto& p) { p.stop = {"\xC0\xAF"}; }, "overlong", {"stop[0]", "UTF-8"});
  ExpectRefused([](auto& p) { p.stop = {"a\x80"}; }, "stray continuation", {"stop[0]", "UTF-8", "byte 1"});
}

TEST(GenerationParamsTest, StopTokenIds) {
  ExpectOk([](auto& p) { p.stop_token_ids = std::vector<int32_t>(64, 0); }, "64 ids");
  ExpectRefused([](auto& p) { p.stop_token_ids = std::vector<int32_t>(65, 0); }, "65 ids",
                {"stop_token_ids", "at most 64", "got 65"});
  ExpectRefused([](auto& p) { p.stop_token_ids = {5, -1}; }, "negative", {"stop_token_ids[1]", ">= 0", "got -1"});

  GenerationParams p;
  p.stop_token_ids = {0, 4095};
  EXPECT_TRUE(ValidateForModel(p, 4096).ok());
  p.stop_token_ids = {0, 4096};
  const Status s = ValidateForModel(p, 4096);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("stop_token_ids[1] must be in [0, 4096)"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("got 4096"), std::string::npos) << s.message();
}

TEST(GenerationParamsTest, Logprobs) {
  ExpectOk([](auto& p) { p.logprobs.reset(); }, "unset");
  ExpectOk([](auto& p) { p.logprobs = 0; }, "0");
  ExpectOk([](auto& p) { p.logprobs = 20; }, "20");
  ExpectRefused([](auto& p) { p.logprobs = -1; }, "-1", {"logprobs", "[0, 20]", "got -1"});
  ExpectRefused([](auto& p) { p.logprobs = 21; }, "21", {"logprobs", "[0, 20]", "got 21"});
}

TEST(GenerationParamsTest, N) {
  ExpectOk([](auto& p) { p.n = 1; }, "1");
  ExpectOk([](auto& p) { p.n = 16; }, "16");
  ExpectRefused([](auto& p) { p.n = 0; }, "0", {"n must be in [1, 16], got 0"});
  ExpectRefused([](auto& p) { p.n = 17; }, "17", {"n must be in [1, 16], got 17"});
}

}  // namespace
}  // namespace mq::serve
