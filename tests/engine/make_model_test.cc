// mq-engine make-model: random-weight Mamba-1 checkpoints of named shapes, and the shape table
// mq-bench shares with it.
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <gtest/gtest.h>

#include "cpu/mamba_forward.h"
#include "io/safetensors.h"
#include "model/mamba_weights.h"
#include "model/model_shapes.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

std::string ReadBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

class MakeModelTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_make_model_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Runs `mq-engine make-model` (stderr folded into the output).
  testing::CommandResult MakeModel(const fs::path& out, const std::string& extra = "") {
    return testing::RunCommand(std::string(MQ_ENGINE_BIN) + " make-model --shape tiny --layers 2 --out " +
                               out.string() + " --tokenizer-from " + testing::RepoPath("models/mamba-tiny") + " " +
                               extra + " 2>&1");
  }

  fs::path dir_;
};

TEST(ModelShapesTest, KnowsTheFamilyAndRejectsOtherNames) {
  auto c = ModelShapeConfig("2.8b");
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c->hidden_size, 2560);
  EXPECT_EQ(c->num_hidden_layers, 64);
  EXPECT_EQ(c->intermediate_size, 5120);
  EXPECT_EQ(c->time_step_rank, 160);
  EXPECT_EQ(c->state_size, 16);
  EXPECT_EQ(c->conv_kernel, 4);
  EXPECT_EQ(c->vocab_size, 50280);
  EXPECT_TRUE(c->tie_word_embeddings);
  EXPECT_TRUE(c->Validate().ok());
  auto small = ModelShapeConfig("130m");
  ASSERT_TRUE(small.ok());
  EXPECT_EQ(small->hidden_size, 768);
  EXPECT_EQ(small->num_hidden_layers, 24);
  EXPECT_EQ(small->time_step_rank, 48);
  EXPECT_EQ(ModelShapeNames().size(), 6u);

  auto bad = ModelShapeConfig("7b");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(bad.status().message().find("2.8b"), std::string::npos) << bad.status().ToString();
  EXPECT_NE(bad.status().message().find("tiny"), std::string::npos) << bad.status().ToString();
}

TEST_F(MakeModelTest, WritesALoadableDeterministicModel) {
  const fs::path a = dir_ / "a", b = dir_ / "b", c = dir_ / "c";
  auto r = MakeModel(a, "--seed 7");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("parameters"), std::string::npos) << r.output;
  for (const char* f : {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"})
    EXPECT_TRUE(fs::exists(a / f)) << f;
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();

  auto w = LoadMambaWeights(a.string());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  const int64_t d = 64, E = 128, N = 16, R = 4, K = 4, V = 50280;
  EXPECT_EQ(w->d(), d);
  EXPECT_EQ(w->E(), E);
  EXPECT_EQ(w->N(), N);
  EXPECT_EQ(w->R(), R);
  EXPECT_EQ(w->K(), K);
  EXPECT_EQ(w->V(), V);
  EXPECT_EQ(w->config.num_hidden_layers, 2);
  EXPECT_TRUE(w->config.tie_word_embeddings);
  ASSERT_EQ(w->layers.size(), 2u);

  auto st = SafetensorsModel::OpenDirectory(a.string());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  const std::vector<std::pair<std::string, std::vector<int64_t>>> expected = {
      {"backbone.embeddings.weight", {V, d}},
      {"backbone.norm_f.weight", {d}},
      {"backbone.layers.1.norm.weight", {d}},
      {"backbone.layers.1.mixer.in_proj.weight", {2 * E, d}},
      {"backbone.layers.1.mixer.conv1d.weight", {E, 1, K}},
      {"backbone.layers.1.mixer.conv1d.bias", {E}},
      {"backbone.layers.1.mixer.x_proj.weight", {R + 2 * N, E}},
      {"backbone.layers.1.mixer.dt_proj.weight", {E, R}},
      {"backbone.layers.1.mixer.dt_proj.bias", {E}},
      {"backbone.layers.1.mixer.A_log", {E, N}},
      {"backbone.layers.1.mixer.D", {E}},
      {"backbone.layers.1.mixer.out_proj.weight", {d, E}}};
  for (const auto& [name, shape] : expected) {
    const TensorView* v = st->Find(name);
    ASSERT_NE(v, nullptr) << name;
    EXPECT_EQ(v->shape, shape) << name;
    EXPECT_EQ(v->dtype, DType::kF16) << name;
  }
  EXPECT_EQ(st->Find("lm_head.weight"), nullptr);  // tied
  EXPECT_EQ(st->size(), 2u + 2u * 10u);

  for (const MambaLayerWeights& L : w->layers) {
    for (int64_t c = 0; c < E; ++c) {
      for (int64_t n = 0; n < N; ++n) EXPECT_NEAR(L.A[c * N + n], -(n + 1.0), 2e-3 * (n + 1)) << c << "," << n;
      EXPECT_EQ(L.D[c], 1.0f);
      // softplus(bias) is dt in [0.001, 0.1] (within F16 rounding).
      const double dt = std::log1p(std::exp(static_cast<double>(L.dt_proj.bias[c])));
      EXPECT_GT(dt, 0.0009);
      EXPECT_LT(dt, 0.101);
    }
    for (float g : L.norm) EXPECT_EQ(g, 1.0f);
  }

  // Same seed: byte-identical weights, whatever the thread count; another seed: different ones.
  ASSERT_EQ(MakeModel(b, "--seed 7 --threads 3").exit_code, 0);
  ASSERT_EQ(MakeModel(c, "--seed 8").exit_code, 0);
  const std::string wa = ReadBytes(a / "model.safetensors");
  EXPECT_EQ(wa, ReadBytes(b / "model.safetensors"));
  EXPECT_EQ(ReadBytes(a / "config.json"), ReadBytes(b / "config.json"));
  EXPECT_NE(wa, ReadBytes(c / "model.safetensors"));

  // The CPU forward over a few tokens gives finite, non-constant logits.
  const std::vector<int32_t> ids = {0, 17, 393, 4095, 50279};
  auto state = cpu::MambaState::Zeros(w->config, 1);
  std::vector<float> logits;
  ASSERT_TRUE(cpu::MambaForward(*w, ids.data(), 1, static_cast<int64_t>(ids.size()), &state, &logits).ok());
  ASSERT_EQ(logits.size(), ids.size() * static_cast<size_t>(V));
  float lo = logits[0], hi = logits[0];
  for (float x : logits) {
    ASSERT_TRUE(std::isfinite(x));
    lo = std::min(lo, x);
    hi = std::max(hi, x);
  }
  EXPECT_GT(hi - lo, 1e-3f);
}

TEST_F(MakeModelTest, F32AndLayerOverride) {
  const fs::path out = dir_ / "m";
  auto r = MakeModel(out, "--dtype f32 --layers 3");
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto st = SafetensorsModel::OpenDirectory(out.string());
  ASSERT_TRUE(st.ok()) << st.status().ToString();
  ASSERT_NE(st->Find("backbone.layers.2.mixer.A_log"), nullptr);
  EXPECT_EQ(st->Find("backbone.layers.2.mixer.A_log")->dtype, DType::kF32);
  auto w = LoadMambaWeights(out.string());
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  EXPECT_EQ(w->config.num_hidden_layers, 3);
  for (int64_t n = 0; n < 16; ++n) EXPECT_FLOAT_EQ(w->layers[2].A[n], -(n + 1.0f));
}

TEST_F(MakeModelTest, RefusesAnExistingNonEmptyOutput) {
  const fs::path out = dir_ / "existing";
  fs::create_directories(out);
  std::ofstream(out / "keep.txt") << "precious";
  auto r = MakeModel(out);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("FAILED_PRECONDITION"), std::string::npos) << r.output;
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(out)) left.push_back(e.path().filename().string());
  EXPECT_EQ(left, std::vector<std::string>{"keep.txt"});
  EXPECT_EQ(ReadBytes(out / "keep.txt"), "precious");
  for (const auto& e : fs::directory_iterator(dir_))
    EXPECT_EQ(e.path().filename().string().find(".partial"), std::string::npos) << e.path();

  // An empty directory is fine to fill; an unknown shape is an invalid argument.
  const fs::path empty = dir_ / "empty";
  fs::create_directories(empty);
  EXPECT_EQ(MakeModel(empty).exit_code, 0);
  EXPECT_TRUE(fs::exists(empty / "model.safetensors"));
  auto bad = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " make-model --shape 7b --out " + (dir_ / "x").string() +
                                 " --tokenizer-from " + testing::RepoPath("models/mamba-tiny") + " 2>&1");
  EXPECT_EQ(bad.exit_code, 2) << bad.output;
  EXPECT_FALSE(fs::exists(dir_ / "x"));
}

}  // namespace
}  // namespace mq
