// The registry's model check at upload commit (the model-format library plus QuantSpec): accepts
// what the engine can load, refuses the rest with INVALID_ARGUMENT naming the artifact file —
// never the blob's local path.
#include "engine_model_check.h"

#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"

namespace mq::server {
namespace {

namespace fs = std::filesystem;

class EngineModelCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_emc_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const fs::path tiny = fs::path(MQ_SOURCE_DIR) / "models/mamba-tiny";
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
      // Blob-like local names: messages must say the artifact's name instead.
      const fs::path blob = dir_ / (std::string("blob_") + f);
      fs::copy_file(tiny / f, blob);
      files_[f] = blob.string();
    }
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Rewrites the weights through `edit` (name, dtype, shape, bytes; return false to drop).
  using Edit = std::function<bool(const std::string&, DType&, std::vector<int64_t>&, std::vector<uint8_t>&)>;
  void RewriteWeights(const Edit& edit, const std::string& into = "model.safetensors") {
    auto in = SafetensorsFile::Open(files_["model.safetensors"]);
    ASSERT_TRUE(in.ok()) << in.status().ToString();
    SafetensorsWriter w;
    for (const auto& [name, view] : (*in)->tensors()) {
      DType dtype = view.dtype;
      std::vector<int64_t> shape = view.shape;
      std::vector<uint8_t> bytes(view.data, view.data + view.nbytes);
      if (edit(name, dtype, shape, bytes)) w.Add(name, dtype, shape, bytes);
    }
    const fs::path out = dir_ / ("blob_new_" + into);
    ASSERT_TRUE(w.Write(out.string()).ok());
    files_.erase("model.safetensors");
    files_[into] = out.string();
  }

  absl::Status Check() { return CheckModelWithEngine(files_).status(); }

  void ExpectRefused(const std::string& needle) {
    const absl::Status s = Check();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(needle), std::string::npos) << s.message();
    EXPECT_EQ(s.message().find(dir_.string()), std::string::npos) << "blob paths must not leak: " << s.message();
  }

  void WriteConfig(const std::function<void(nlohmann::json&)>& edit) {
    std::ifstream in(files_["config.json"]);
    nlohmann::json j = nlohmann::json::parse(in);
    edit(j);
    std::ofstream(files_["config.json"], std::ios::trunc) << j.dump();
  }

  fs::path dir_;
  std::map<std::string, std::string> files_;
};

TEST_F(EngineModelCheckTest, AcceptsTheTinyModelAndReturnsItsType) {
  auto type = CheckModelWithEngine(files_);
  ASSERT_TRUE(type.ok()) << type.status();
  EXPECT_EQ(*type, "mamba");
}

TEST_F(EngineModelCheckTest, RefusesUnsupportedArchitectures) {
  std::ofstream(files_["config.json"], std::ios::trunc) << R"({"model_type":"mamba2","hidden_size":64})";
  ExpectRefused("mamba2");
}

TEST_F(EngineModelCheckTest, RefusesACorruptSafetensorsFileNamingIt) {
  // Truncate the weights: the header's offsets now run past the end of the file.
  fs::resize_file(files_["model.safetensors"], fs::file_size(files_["model.safetensors"]) / 2);
  ExpectRefused("model.safetensors");
}

TEST_F(EngineModelCheckTest, RefusesModelsWithoutWeightsOrConfigOrTokenizer) {
  for (const char* missing : {"model.safetensors", "config.json", "tokenizer.json"}) {
    auto files = files_;
    files.erase(missing);
    EXPECT_EQ(CheckModelWithEngine(files).status().code(), absl::StatusCode::kInvalidArgument) << missing;
  }
}

TEST_F(EngineModelCheckTest, RefusesAModelWithNoTensors) {
  RewriteWeights([](auto&, auto&, auto&, auto&) { return false; });
  ExpectRefused("no tensor");
}

TEST_F(EngineModelCheckTest, RefusesShapesThatDisagreeWithConfig) {
  // config.json says 2 layers of hidden size 64; the file's D of layer 1 has one row less.
  RewriteWeights([](const std::string& name, DType&, std::vector<int64_t>& shape, std::vector<uint8_t>& bytes) {
    if (name == "backbone.layers.1.mixer.D") {
      shape[0] -= 1;
      bytes.resize(bytes.size() - 4);
    }
    return true;
  });
  ExpectRefused("backbone.layers.1.mixer.D");
  // And a config that claims more layers than the weights hold.
  SetUp();
  WriteConfig([](nlohmann::json& j) { j["num_hidden_layers"] = 3; });
  ExpectRefused("backbone.layers.2");
}

TEST_F(EngineModelCheckTest, RefusesNaNAndInfWeights) {
  const float bad[] = {std::nanf(""), INFINITY};
  for (float value : bad) {
    SetUp();
    RewriteWeights([value](const std::string& name, DType&, std::vector<int64_t>&, std::vector<uint8_t>& bytes) {
      if (name == "backbone.layers.0.mixer.A_log") std::memcpy(bytes.data() + 4 * 5, &value, 4);
      return true;
    });
    ExpectRefused("backbone.layers.0.mixer.A_log\" holds NaN or Inf (element 5)");
  }
}

TEST_F(EngineModelCheckTest, RefusesDeeplyNestedOrEmptyJson) {
  std::ofstream(files_["config.json"], std::ios::trunc)
      << R"({"model_type":"mamba","x":)" << std::string(100000, '[') << std::string(100000, ']') << "}";
  ExpectRefused("nests deeper than 64");
  SetUp();
  std::ofstream(files_["tokenizer.json"], std::ios::trunc)
      << R"({"model":)" << std::string(100000, '[') << std::string(100000, ']') << "}";
  ExpectRefused("nests deeper than 64");
  for (const char* empty : {"", "{}"}) {
    SetUp();
    std::ofstream(files_["tokenizer.json"], std::ios::trunc) << empty;
    ExpectRefused("tokenizer.json");
  }
  SetUp();
  std::ofstream(files_["config.json"], std::ios::trunc) << "";
  ExpectRefused("config.json");
}

TEST_F(EngineModelCheckTest, ChecksAShardedModelThroughItsIndex) {
  // Split the tiny model into two shards with an index: accepted; then the index names a shard
  // that was not uploaded, a shard outside the model, or a tensor its shard lacks: refused.
  auto in = SafetensorsFile::Open(files_["model.safetensors"]);
  ASSERT_TRUE(in.ok());
  SafetensorsWriter a, b;
  nlohmann::json index = {{"metadata", nlohmann::json::object()}, {"weight_map", nlohmann::json::object()}};
  for (const auto& [name, view] : (*in)->tensors()) {
    const bool first = name.find("layers.1.") == std::string::npos;
    (first ? a : b).Add(name, view.dtype, view.shape, std::vector<uint8_t>(view.data, view.data + view.nbytes));
    index["weight_map"][name] = first ? "model-00001-of-00002.safetensors" : "model-00002-of-00002.safetensors";
  }
  ASSERT_TRUE(a.Write((dir_ / "blob_s1").string()).ok());
  ASSERT_TRUE(b.Write((dir_ / "blob_s2").string()).ok());
  files_.erase("model.safetensors");
  files_["model-00001-of-00002.safetensors"] = (dir_ / "blob_s1").string();
  files_["model-00002-of-00002.safetensors"] = (dir_ / "blob_s2").string();
  files_["model.safetensors.index.json"] = (dir_ / "blob_index").string();
  std::ofstream(dir_ / "blob_index") << index.dump();
  ASSERT_TRUE(Check().ok()) << Check();

  auto sharded = files_;
  files_.erase("model-00002-of-00002.safetensors");
  ExpectRefused("model-00002-of-00002.safetensors\" is missing");

  files_ = sharded;
  index["weight_map"]["backbone.norm_f.weight"] = "../model-00001-of-00002.safetensors";
  std::ofstream(dir_ / "blob_index", std::ios::trunc) << index.dump();
  ExpectRefused("not a plain file name");

  index["weight_map"]["backbone.norm_f.weight"] = "model-00002-of-00002.safetensors";
  std::ofstream(dir_ / "blob_index", std::ios::trunc) << index.dump();
  ExpectRefused("\"backbone.norm_f.weight\" is listed in shard \"model-00002-of-00002.safetensors\"");
}

TEST_F(EngineModelCheckTest, RefusesTokenizerIdsPastTheEmbedding) {
  // The tiny tokenizer's ids reach 4095; a config with 4000 embedding rows cannot hold them.
  WriteConfig([](nlohmann::json& j) { j["vocab_size"] = 4000; });
  RewriteWeights([](const std::string& name, DType&, std::vector<int64_t>& shape, std::vector<uint8_t>& bytes) {
    if (name == "backbone.embeddings.weight") {
      shape[0] = 4000;
      bytes.resize(static_cast<size_t>(4000 * shape[1] * 4));
    }
    return true;
  });
  ExpectRefused("embedding rows");
}

TEST_F(EngineModelCheckTest, RefusesAnUnknownOrIllTypedQuantizationFormat) {
  WriteConfig([](nlohmann::json& j) {
    j["quantization_config"] = {{"format_version", 7}, {"preset", "mambaquant"}, {"bits", "w8a8"},
                                {"scope", "linear"}, {"activation_granularity", "per_token"},
                                {"transforms", nlohmann::json::object()}};
  });
  EXPECT_EQ(Check().code(), absl::StatusCode::kInvalidArgument);
  WriteConfig([](nlohmann::json& j) { j["quantization_config"]["format_version"] = 1e300; });
  ExpectRefused("format_version must be an integer");
  WriteConfig([](nlohmann::json& j) {
    j["quantization_config"]["format_version"] = 1;
    j["quantization_config"]["online_transforms"] = {{{"layer", 0}, {"site", "out_proj_input"}, {"kind", 5},
                                                      {"size", 128}, {"seed", 1}}};
  });
  ExpectRefused("online_transforms[0].kind must be a string");
}

}  // namespace
}  // namespace mq::server
