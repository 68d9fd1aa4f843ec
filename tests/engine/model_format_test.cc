// The model-format library (worker/engine/format/) and the parser defects of issue 13: bounded
// JSON, names, the quantized loader's metadata, config.json's integer ranges, and the tokenizer's
// bounds on added tokens and templates. Each input that used to crash, throw or blow up is here.
#include <unistd.h>

#include <functional>
#include <filesystem>
#include <fstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "format/bounded_json.h"
#include "format/limits.h"
#include "format/mamba_tensors.h"
#include "format/model_check.h"
#include "format/safe_name.h"
#include "format/safetensors_index.h"
#include "format/tokenizer_json.h"
#include "model/mamba_config.h"
#include "model/model_loader.h"
#include "test_paths.h"
#include "tokenizer/bpe_tokenizer.h"

namespace mq {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string TinyModelDir() { return testing::RepoPath("models/mamba-tiny"); }

std::string Nested(size_t depth) { return std::string(depth, '[') + std::string(depth, ']'); }

TEST(BoundedJsonTest, DepthSizeAndEmptiness) {
  EXPECT_TRUE(format::ParseJson(Nested(format::kMaxJsonDepth), "x", 1 << 20).ok());
  auto deep = format::ParseJson(Nested(format::kMaxJsonDepth + 1), "x", 1 << 20);
  ASSERT_FALSE(deep.ok());
  EXPECT_NE(deep.status().message().find("nests deeper than 64"), std::string::npos) << deep.status().ToString();
  // Brackets inside strings are text, not nesting.
  EXPECT_TRUE(format::ParseJson("{\"a\":\"" + std::string(1000, '[') + "\"}", "x", 1 <<20).ok());
  EXPECT_EQ(format::ParseJson("  \n", "x", 100).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(format::ParseJson("[1,2]", "x", 4).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(format::ParseJson("{\"a\":", "x", 100, StatusCode::kDataLoss).status().code(), StatusCode::kDataLoss);
}

TEST(SafeNameTest, TensorAndFileNames) {
  EXPECT_TRUE(format::CheckTensorName("backbone.layers.0.mixer.A_log", "t").ok());
  EXPECT_TRUE(format::CheckTensorName("model/encoder:0", "t").ok());
  for (const char* bad : {"", "a b", "a\nb", "a\"b", "é"})
    EXPECT_FALSE(format::CheckTensorName(bad, "t").ok()) << bad;
  EXPECT_FALSE(format::CheckTensorName(std::string(format::kMaxTensorNameBytes + 1, 'a'), "t").ok());
  EXPECT_TRUE(format::CheckPlainFileName("model-00001-of-00002.safetensors", "f").ok());
  for (const std::string bad : {std::string(), std::string("."), std::string(".."), std::string("../x"),
                                std::string("a/b"), std::string("/etc/passwd"), std::string("a\\b"),
                                std::string("x\0y", 3), std::string(256, 'a')})
    EXPECT_FALSE(format::CheckPlainFileName(bad, "f").ok()) << bad;
}

TEST(SafetensorsIndexTest, ParsesAndRefusesPathsOutOfTheDirectory) {
  auto index = format::ParseSafetensorsIndex(
      R"({"metadata":{},"weight_map":{"a":"s1.safetensors","b":"s2.safetensors","c":"s1.safetensors"}})", "i");
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->tensor_to_shard.size(), 3u);
  EXPECT_EQ(index->shards, (std::vector<std::string>{"s1.safetensors", "s2.safetensors"}));
  for (const char* bad : {R"({"weight_map":{"a":"../s.safetensors"}})", R"({"weight_map":{"a":"/abs"}})",
                          R"({"weight_map":{"a":3}})", R"({"weight_map":{}})", R"({"weight_map":[]})", "[]"}) {
    auto s = format::ParseSafetensorsIndex(bad, "i");
    EXPECT_EQ(s.status().code(), StatusCode::kDataLoss) << bad;
  }
}

TEST(MambaConfigBoundsTest, HugeAndWrappingNumbersAreRefusedBeforeArithmetic) {
  // expand · hidden_size and hidden_size + 15 used to overflow int64 (undefined behaviour).
  for (const char* text :
       {R"({"model_type":"mamba","hidden_size":9223372036854775807,"expand":9223372036854775807})",
        R"({"model_type":"mamba","hidden_size":64,"expand":9223372036854775807})",
        R"({"model_type":"mamba","hidden_size":18446744073709551615})",
        R"({"model_type":"mamba","vocab_size":18446744073709551615})",
        R"({"model_type":"mamba","time_step_rank":18446744073709551615})",
        R"({"model_type":"mamba","hidden_size":1e300})"}) {
    auto c = MambaConfig::FromJsonText(text, "config.json");
    EXPECT_EQ(c.status().code(), StatusCode::kInvalidArgument) << text;
  }
  auto deep = MambaConfig::FromJsonText(R"({"model_type":"mamba","x":)" + Nested(100000) + "}", "config.json");
  EXPECT_EQ(deep.status().code(), StatusCode::kInvalidArgument);
}

TEST(MambaTensorsTest, TheTinyModelHasExactlyTheExpectedShapes) {
  auto config = MambaConfig::FromFile(TinyModelDir() + "/config.json");
  ASSERT_TRUE(config.ok());
  const auto expected = format::ExpectedMambaTensors(*config, false);
  // 2 (embeddings, norm_f) + 2 layers × 10 (norm, in_proj, conv w+b, x_proj, dt_proj w+b, A_log, D, out_proj).
  EXPECT_EQ(expected.size(), 2u + 2u * 10u);
  auto summary = format::CheckModelDirectory(TinyModelDir());
  ASSERT_TRUE(summary.ok()) << summary.status().ToString();
  EXPECT_EQ(summary->tensors, expected.size());
  EXPECT_FALSE(summary->quantized);
  EXPECT_EQ(summary->model_type, "mamba");
  // Independent count of the bytes: every tensor is float32 of the config's shapes.
  uint64_t bytes = 0;
  for (const auto& e : expected) {
    uint64_t n = 4;
    for (int64_t d : *e.shape) n *= static_cast<uint64_t>(d);
    bytes += n;
  }
  EXPECT_EQ(summary->tensor_bytes, bytes);
}

class QuantizedConfigTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_qcfg_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    std::ifstream in(TinyModelDir() + "/config.json");
    config_ = json::parse(in);
    config_["quantization_config"] = {
        {"format_version", 1}, {"preset", "mambaquant"}, {"bits", "w8a8"}, {"scope", "linear"},
        {"activation_granularity", "per_token"}, {"transforms", {{"r1", "hadamard"}}},
        {"online_transforms", {{{"layer", 0}, {"site", "out_proj_input"}, {"kind", "random_hadamard"},
                                {"size", 128}, {"seed", 7}}}}};
  }
  void TearDown() override { fs::remove_all(dir_); }
  Status Load(const std::string& text) {
    std::ofstream(dir_ / "config.json", std::ios::trunc) << text;
    auto m = LoadModel(dir_.string());
    return m.ok() ? OkStatus() : m.status();
  }
  fs::path dir_;
  json config_;
};

TEST_F(QuantizedConfigTest, WellTypedMetadataReachesTheWeights) {
  // No weights in the directory: a config the loader accepts ends at the missing safetensors.
  EXPECT_EQ(Load(config_.dump()).code(), StatusCode::kNotFound);
}

TEST_F(QuantizedConfigTest, WrongTypesAreClearErrorsNotExceptions) {
  // Each of these aborted mq-engine (uncaught nlohmann::type_error) or was an undefined
  // float-to-integer cast.
  const std::vector<std::pair<std::function<void(json&)>, std::string>> cases = {
      {[](json& q) { q["online_transforms"][0]["kind"] = 5; }, "online_transforms[0].kind must be a string"},
      {[](json& q) { q["online_transforms"][0]["size"] = "128"; }, "online_transforms[0].size must be"},
      {[](json& q) { q["online_transforms"][0]["seed"] = -1; }, "online_transforms[0].seed must be"},
      {[](json& q) { q["online_transforms"][0]["layer"] = 2; }, "is not below num_hidden_layers 2"},
      {[](json& q) { q["seed"] = 1e300; }, "quantization_config.seed must be a non-negative integer"},
      {[](json& q) { q["format_version"] = 1e300; }, "format_version must be an integer"},
      {[](json& q) { q["transforms"] = json::array(); }, "transforms must be an object"},
      {[](json& q) { q["activation_percentile"] = "high"; }, "activation_percentile must be a number"},
  };
  for (const auto& [edit, needle] : cases) {
    json c = config_;
    edit(c["quantization_config"]);
    const Status s = Load(c.dump());
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << needle << ": " << s.ToString();
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.ToString();
  }
}

TEST_F(QuantizedConfigTest, DeeplyNestedConfigIsRefusedWithoutExhaustingTheStack) {
  // Used to overflow the stack (the loader re-serialized the parsed config recursively).
  const Status s = Load(R"({"model_type":"mamba","quantization_config":)" + Nested(200000) + "}");
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("nests deeper"), std::string::npos) << s.ToString();
}

json SmallTokenizer() {
  std::ifstream in(testing::RepoPath("tests/fuzz/corpus/tokenizer_json/template"));
  return json::parse(in);
}

TEST(TokenizerBoundsTest, AnAddedTokenLongerThanTheLimitIsRefused) {
  for (size_t length : {format::kMaxAddedTokenBytes, format::kMaxAddedTokenBytes + 1}) {
    json t = SmallTokenizer();
    const int next_id = t["added_tokens"][0]["id"].get<int>() + 1;
    t["added_tokens"].push_back({{"id", next_id}, {"content", std::string(length, 'a')}, {"special", true},
                                 {"normalized", false}});
    auto tok = Tokenizer::LoadFromJson(t.dump());
    if (length <= format::kMaxAddedTokenBytes) {
      ASSERT_TRUE(tok.ok()) << tok.status().ToString();
      // The token is matched, and text that almost matches costs at most its length per byte.
      auto ids = tok->Encode(std::string(length, 'a') + "b");
      ASSERT_TRUE(ids.ok());
      EXPECT_EQ(ids->front(), t["added_tokens"][0]["id"].get<int>());  // the template's special token
      EXPECT_EQ((*ids)[1], next_id);
    } else {
      EXPECT_EQ(tok.status().code(), StatusCode::kDataLoss);
      EXPECT_NE(tok.status().message().find("more than the limit of 256"), std::string::npos)
          << tok.status().ToString();
    }
  }
}

TEST(TokenizerBoundsTest, ATemplateCannotExpandEveryEncoding) {
  json t = SmallTokenizer();
  const int eot = t["added_tokens"][0]["id"].get<int>();
  // 60 references to a special token of 2000 ids: every encoding would grow by 120,000 ids.
  t["post_processor"]["special_tokens"]["<|endoftext|>"]["ids"] = std::vector<int>(2000, eot);
  auto tok = Tokenizer::LoadFromJson(t.dump());
  EXPECT_EQ(tok.status().code(), StatusCode::kDataLoss);
  // Within each per-token bound, the total is bounded too: 20 references × 100 ids = 2000 > 1024.
  t["post_processor"]["special_tokens"]["<|endoftext|>"]["ids"] = std::vector<int>(100, eot);
  json single = json::array();
  for (int i = 0; i < 20; ++i) single.push_back({{"SpecialToken", {{"id", "<|endoftext|>"}, {"type_id", 0}}}});
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  t["post_processor"]["single"] = single;
  tok = Tokenizer::LoadFromJson(t.dump());
  EXPECT_EQ(tok.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(tok.status().message().find("adds 2000 ids"), std::string::npos) << tok.status().ToString();
}

TEST(TokenizerJsonTest, StructureBoundsAreChecked) {
  EXPECT_TRUE(format::CheckTokenizerJson(SmallTokenizer()).ok());
  EXPECT_FALSE(format::CheckTokenizerJson(json::array()).ok());
  auto deep = format::ParseTokenizerJson(R"({"model":)" + Nested(1000) + "}", "tokenizer.json");
  EXPECT_EQ(deep.status().code(), StatusCode::kDataLoss);
}

}  // namespace
}  // namespace mq
