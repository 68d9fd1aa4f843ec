// A Vim-tiny-shaped model from `mq-engine make-model` loads and classifies; corrupt or mismatched
// model directories give clear errors.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "test_paths.h"
#include "test_util.h"
#include "vim/vim_model.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

class VimModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("mq_vim_model_" + std::to_string(::getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    // The full released Vim-tiny shape: 24 blocks.
    made_ = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " make-model --shape vim-tiny --seed 3 --out " +
                                (root_ / "tiny").string() + " 2>&1");
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // A copy of the tiny model whose tensors pass through `edit` (name, shape, values) first.
  template <typename Edit>
  fs::path CorruptCopy(const std::string& name, Edit edit) {
    const fs::path dir = root_ / name;
    fs::create_directories(dir);
    fs::copy_file(root_ / "tiny" / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
    auto f = SafetensorsFile::Open((root_ / "tiny" / "model.safetensors").string());
    EXPECT_TRUE(f.ok());
    SafetensorsWriter w;
    for (const auto& [n, v] : (*f)->tensors()) {
      std::string tn = n;
      std::vector<int64_t> shape = v.shape;
      std::vector<float> x = ToFloat32(v);
      if (!edit(tn, shape, x)) continue;
      w.AddF32(tn, shape, x);
    }
    EXPECT_TRUE(w.Write((dir / "model.safetensors").string()).ok());
    return dir;
  }

  static fs::path root_;
  static testing::CommandResult made_;
};
fs::path VimModelTest::root_;
testing::CommandResult VimModelTest::made_;

TEST_F(VimModelTest, MakeModelWritesTheReleasedVimTinyShape) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  // vim-forward.md: the registered Vim-tiny has 415 tensors and 7,148,008 parameters.
  EXPECT_NE(made_.output.find("7148008 parameters"), std::string::npos) << made_.output;
  auto f = SafetensorsFile::Open((root_ / "tiny" / "model.safetensors").string());
  ASSERT_TRUE(f.ok());
  EXPECT_EQ((*f)->tensors().size(), 415u);
  EXPECT_EQ((*f)->Find("layers.23.mixer.x_proj_b.weight")->shape, (std::vector<int64_t>{44, 384}));
}

TEST_F(VimModelTest, VimTinyShapedModelLoadsAndClassifies) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  auto model = VimModel::Load((root_ / "tiny").string());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const VimConfig& c = (*model)->config();
  EXPECT_EQ(c.img_size, 224);
  EXPECT_EQ(c.in_chans, 3);
  EXPECT_EQ(c.num_classes, 1000);
  EXPECT_EQ(c.depth, 24);
  std::vector<float> images(static_cast<size_t>(2 * c.image_numel()));
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  for (float& v : images) v = nd(rng);
  std::vector<float> logits(2 * 1000), one(1000);
  ASSERT_TRUE((*model)->Classify(images.data(), 2, logits.data()).ok());
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  // The two images give different logits, and the second equals its own single-image pass.
  EXPECT_GT(testing::RelError(logits.data(), logits.data() + 1000, 1000), 1e-3);
  ASSERT_TRUE((*model)->Classify(images.data() + c.image_numel(), 1, one.data()).ok());
  EXPECT_LE(testing::RelError(logits.data() + 1000, one.data(), 1000), 1e-6);
}

TEST_F(VimModelTest, WrongShapeIsAnErrorNamingTheTensor) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  const fs::path dir = CorruptCopy("shape", [](std::string& n, std::vector<int64_t>& shape, std::vector<float>& x) {
    if (n == "layers.5.mixer.dt_proj_b.weight") {  // [384, 12] -> [384, 11]
      shape[1] = 11;
      x.resize(384 * 11);
    }
    return true;
  });
  auto m = VimModel::Load(dir.string());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(m.status().message().find("layers.5.mixer.dt_proj_b.weight"), std::string::npos) << m.status().ToString();
}

TEST_F(VimModelTest, MissingTensorIsNotFound) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  const fs::path dir = CorruptCopy("missing", [](std::string& n, std::vector<int64_t>&, std::vector<float>&) {
    return n != "layers.0.mixer.A_b_log";
  });
  auto m = VimModel::Load(dir.string());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("A_b_log"), std::string::npos) << m.status().ToString();
}

TEST_F(VimModelTest, NonFiniteWeightIsRejected) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  const fs::path dir = CorruptCopy("nan", [](std::string& n, std::vector<int64_t>&, std::vector<float>& x) {
    if (n == "pos_embed") x[17] = NAN;
    return true;
  });
  EXPECT_EQ(VimModel::Load(dir.string()).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(VimModelTest, ConfigThatDisagreesWithTheWeightsIsRejected) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  auto with_config = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    const fs::path dir = CorruptCopy(name, [](std::string&, std::vector<int64_t>&, std::vector<float>&) { return true; });
    std::ifstream in(dir / "config.json");
    nlohmann::json j = nlohmann::json::parse(in);
    in.close();
    edit(j);
    std::ofstream(dir / "config.json", std::ios::trunc) << j.dump();
    return VimModel::Load(dir.string()).status();
  };
  // Fewer blocks than the file has: the left-over tensors are reported.
  Status s = with_config("shallow", [](nlohmann::json& j) { j["depth"] = 23; });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("layers.23"), std::string::npos) << s.ToString();
  // More blocks than the file has.
  EXPECT_EQ(with_config("deep", [](nlohmann::json& j) { j["depth"] = 25; }).code(), StatusCode::kNotFound);
  // A geometry whose position table does not match pos_embed.
  s = with_config("geometry", [](nlohmann::json& j) {
    j["stride"] = 8;
    j.erase("grid_size"), j.erase("num_patches"), j.erase("seq_len"), j.erase("cls_token_index");
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("pos_embed"), std::string::npos) << s.ToString();
  // A different width.
  EXPECT_EQ(with_config("width", [](nlohmann::json& j) { j["embed_dim"] = 384; j.erase("d_inner"); j.erase("dt_rank"); }).code(),
            StatusCode::kInvalidArgument);
}

TEST_F(VimModelTest, TruncatedFileIsAnError) {
  ASSERT_EQ(made_.exit_code, 0) << made_.output;
  const fs::path dir = root_ / "truncated";
  fs::create_directories(dir);
  fs::copy_file(root_ / "tiny" / "config.json", dir / "config.json", fs::copy_options::overwrite_existing);
  fs::copy_file(root_ / "tiny" / "model.safetensors", dir / "model.safetensors", fs::copy_options::overwrite_existing);
  fs::resize_file(dir / "model.safetensors", fs::file_size(dir / "model.safetensors") - 1000);
  auto m = VimModel::Load(dir.string());
  EXPECT_FALSE(m.ok());
}

}  // namespace
}  // namespace mq
