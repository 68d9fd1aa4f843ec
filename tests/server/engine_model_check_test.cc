// The registry's engine-backed model check: accepts what the engine can load, refuses the rest
// with INVALID_ARGUMENT naming the artifact file.
#include "engine_model_check.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

namespace mq::server {
namespace {

namespace fs = std::filesystem;

class EngineModelCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_emc_" + std::to_string(::getpid()));
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    const fs::path tiny = fs::path(MQ_SOURCE_DIR) / "models/mamba-tiny";
    for (const char* f : {"config.json", "model.safetensors", "tokenizer.json"}) {
      fs::copy_file(tiny / f, dir_ / f);
      files_[f] = (dir_ / f).string();
    }
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
  std::map<std::string, std::string> files_;
};

TEST_F(EngineModelCheckTest, AcceptsTheTinyModel) { EXPECT_TRUE(CheckModelWithEngine(files_).ok()); }

TEST_F(EngineModelCheckTest, RefusesUnsupportedArchitectures) {
  std::ofstream(files_["config.json"]) << R"({"model_type":"mamba2","hidden_size":64})";
  const absl::Status s = CheckModelWithEngine(files_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("mamba2"), std::string::npos) << s.message();
}

TEST_F(EngineModelCheckTest, RefusesACorruptSafetensorsFileNamingIt) {
  // Truncate the weights: the header's offsets now run past the end of the file.
  fs::resize_file(files_["model.safetensors"], fs::file_size(files_["model.safetensors"]) / 2);
  const absl::Status s = CheckModelWithEngine(files_);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model.safetensors"), std::string::npos) << s.message();
  EXPECT_EQ(s.message().find(dir_.string()), std::string::npos) << "blob paths must not leak: " << s.message();
}

TEST_F(EngineModelCheckTest, RefusesModelsWithoutWeightsOrConfig) {
  auto no_weights = files_;
  no_weights.erase("model.safetensors");
  EXPECT_EQ(CheckModelWithEngine(no_weights).code(), absl::StatusCode::kInvalidArgument);
  auto no_config = files_;
  no_config.erase("config.json");
  EXPECT_EQ(CheckModelWithEngine(no_config).code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(EngineModelCheckTest, RefusesAnUnknownQuantizationFormat) {
  std::ofstream(files_["config.json"]) << R"({"model_type":"mamba","hidden_size":64,"num_hidden_layers":2,
    "intermediate_size":128,"time_step_rank":4,"vocab_size":4096,
    "quantization_config":{"format_version":7,"preset":"mambaquant","bits":"w8a8","scope":"linear",
    "activation_granularity":"per_token","transforms":{}}})";
  EXPECT_EQ(CheckModelWithEngine(files_).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq::server
