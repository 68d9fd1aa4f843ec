// Vim quantization scope `full` on the vim-digits fixture: the INT8 conv1d input/weight and the
// INT8 h·C of BOTH scan directions, with S3 at the shared conv input and S4 + online R4 at each
// direction's h·C for mambaquant. The transforms keep the function, each direction's quantized
// h·C really runs, mambaquant W8A8 keeps the accuracy (and is no worse than quarot), and the export
// (I8 conv1d / conv1d_b, each direction's R4) loads back to the same logits.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "test_paths.h"
#include "test_util.h"
#include "vim/vim_image_set.h"
#include "vim/vim_metrics.h"
#include "vim/vim_model.h"
#include "vim/vim_quantizer.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

std::string VisionFixture(const std::string& rel) { return testing::SharedFixture("vision/" + rel); }

#define MQ_REQUIRE_VISION_FIXTURE()                                                    \
  if (!testing::Exists(VisionFixture("vim-digits/model.safetensors")))                \
  GTEST_SKIP() << "fixture vision/vim-digits not found under " MQ_SHARED_FIXTURES_DIR \
               << " (it lives in ../shared, not in the repository)"

class VimScopeFullTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!testing::Exists(VisionFixture("vim-digits/model.safetensors"))) return;
    auto w = LoadVimWeights(VisionFixture("vim-digits"));
    ASSERT_TRUE(w.ok()) << w.status().ToString();
    float_ = *w;
    const std::string ref = VisionFixture("vim-digits-reference.safetensors");
    auto calib = LoadImageSet(ref, float_.config, "calib_");
    auto test = LoadImageSet(ref, float_.config, "test_");
    ASSERT_TRUE(calib.ok() && test.ok());
    calib_ = *calib;
    test_ = *test;
    float_logits_ = Logits(float_);
    dir_ = fs::temp_directory_path() / ("mq_vim_full_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<float> Logits(const VimWeights& w) {
    auto m = VimModel::FromWeights(w);
    std::vector<float> l(static_cast<size_t>(test_.count * 10));
    EXPECT_TRUE(m->Classify(test_.images.data(), test_.count, l.data()).ok());
    return l;
  }
  double Acc(const std::vector<float>& l) { return Accuracy(TopClasses(l, 10), test_.labels); }

  VimWeights float_;
  ImageSet calib_, test_;
  std::vector<float> float_logits_;
  fs::path dir_;
};

TEST_F(VimScopeFullTest, TransformsAlonePreserveTheFunction) {
  MQ_REQUIRE_VISION_FIXTURE();
  for (const char* preset : {"rtn", "smoothquant", "quarot", "mambaquant"}) {
    VimQuantizeOptions o;
    o.preset = preset;
    o.scope = "full";
    o.transform_only = true;
    auto b = BuildQuantizedVim(o, float_, calib_);
    ASSERT_TRUE(b.ok()) << preset << ": " << b.status().ToString();
    const std::vector<float> l = Logits(b->model);
    EXPECT_LE(testing::RelError(l.data(), float_logits_.data(), l.size()), 1e-4) << preset;
  }
  // mambaquant: S3 scaled both conv1d's rows by one vector, S4 + R4 changed each direction's B/C
  // rows and left an orthogonal R4 on each scan.
  VimQuantizeOptions o;
  o.scope = "full";
  o.transform_only = true;
  auto b = BuildQuantizedVim(o, float_, calib_);
  ASSERT_TRUE(b.ok());
  const int64_t E = float_.E(), K = float_.K(), N = float_.N(), R = float_.R();
  for (size_t li = 0; li < float_.layers.size(); ++li) {
    const VimLayerWeights& t = b->model.layers[li];
    const VimLayerWeights& f = float_.layers[li];
    for (int64_t e = 0; e < E; e += 17) {
      const float sf = t.mixer.conv_weight[e * K] / f.mixer.conv_weight[e * K];
      const float sb = t.backward.conv_weight[e * K] / f.backward.conv_weight[e * K];
      EXPECT_NEAR(sf, sb, 1e-4 * std::fabs(sf)) << "layer " << li << " channel " << e;
    }
    for (const MambaLayerWeights* L : {&t.mixer, &t.backward}) {
      ASSERT_EQ(L->state_rotation.size(), static_cast<size_t>(N * N));
      for (int64_t i = 0; i < N; ++i) {
        double d = 0.0;
        for (int64_t k = 0; k < N; ++k) d += static_cast<double>(L->state_rotation[i * N + k]) * L->state_rotation[k];
        EXPECT_NEAR(d, i == 0 ? 1.0 : 0.0, 1e-5);
      }
    }
    // The backward direction's C rows moved (its own S4 + R4 ran).
    const size_t c0 = static_cast<size_t>((R + N) * E), c1 = static_cast<size_t>((R + 2 * N) * E);
    EXPECT_GT(testing::RelError(t.backward.x_proj.weight.data() + c0, f.backward.x_proj.weight.data() + c0, c1 - c0), 0.1);
  }
  EXPECT_TRUE(b->quantization_config["transforms"]["s3"].get<bool>());
  EXPECT_TRUE(b->quantization_config["transforms"]["s4"].get<bool>());
  EXPECT_EQ(b->quantization_config["scope"], "full");
}

TEST_F(VimScopeFullTest, BothDirectionsQuantizeConvAndOutputProduct) {
  MQ_REQUIRE_VISION_FIXTURE();
  VimQuantizeOptions o;
  o.scope = "full";
  auto b = BuildQuantizedVim(o, float_, calib_);
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  const int64_t E = float_.E(), K = float_.K();
  for (const VimLayerWeights& lw : b->model.layers)
    for (const MambaLayerWeights* L : {&lw.mixer, &lw.backward}) {
      EXPECT_TRUE(L->quantize_conv_input && L->quantize_output_product && L->state_scale_per_channel);
      // Conv weights on the INT8 grid of their channel's scale.
      ASSERT_EQ(L->conv_weight_scale.size(), static_cast<size_t>(E));
      for (int64_t e = 0; e < E; ++e)
        for (int64_t k = 0; k < K; ++k) {
          const float q = L->conv_weight[e * K + k] / L->conv_weight_scale[e];
          ASSERT_NEAR(q, std::nearbyint(q), 1e-3);
          ASSERT_LE(std::fabs(q), 127.5f);
        }
    }
  const std::vector<float> full = Logits(b->model);
  // Each direction's INT8 h·C is in effect: switching it off (float h·C) in one direction changes
  // the logits.
  for (int dir = 0; dir < 2; ++dir) {
    VimWeights w = b->model;
    for (VimLayerWeights& lw : w.layers) (dir == 0 ? lw.mixer : lw.backward).quantize_output_product = false;
    const std::vector<float> l = Logits(w);
    EXPECT_GT(testing::RelError(l.data(), full.data(), l.size()), 1e-6) << "direction " << dir;
  }
  // So is the conv input's.
  VimWeights w = b->model;
  for (VimLayerWeights& lw : w.layers) lw.mixer.quantize_conv_input = false;
  const std::vector<float> l = Logits(w);
  EXPECT_GT(testing::RelError(l.data(), full.data(), l.size()), 1e-6);
}

TEST_F(VimScopeFullTest, MambaQuantW8A8KeepsTheAccuracyAndIsNoWorseThanQuaRot) {
  MQ_REQUIRE_VISION_FIXTURE();
  const double float_acc = Acc(float_logits_);
  for (const char* act : {"per_token", "per_tensor"}) {
    double acc[2];
    int i = 0;
    for (const char* preset : {"mambaquant", "quarot"}) {
      VimQuantizeOptions o;
      o.scope = "full";
      o.preset = preset;
      o.act_granularity = act;
      auto b = BuildQuantizedVim(o, float_, calib_);
      ASSERT_TRUE(b.ok()) << b.status().ToString();
      const std::vector<float> q = Logits(b->model);
      acc[i++] = Acc(q);
      const double rel = testing::RelError(q.data(), float_logits_.data(), q.size());
      EXPECT_GT(rel, 1e-6) << preset << " " << act;  // quantized, not float
      EXPECT_LT(rel, 0.1) << preset << " " << act;
    }
    EXPECT_GE(acc[0], float_acc - 0.01) << act;
    EXPECT_GE(acc[0], acc[1]) << act;
  }
}

TEST_F(VimScopeFullTest, ExportLoadsBackToTheSameLogits) {
  MQ_REQUIRE_VISION_FIXTURE();
  VimQuantizeOptions o;
  o.model_dir = VisionFixture("vim-digits");
  o.output_dir = (dir_ / "good").string();
  o.calib_path = VisionFixture("vim-digits-reference.safetensors");
  o.calib_prefix = "calib_";
  o.scope = "full";
  o.act_granularity = "per_tensor";
  auto r = QuantizeVimModel(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(nlohmann::json::parse(r->report_json)["scope"], "full");
  auto m = VimModel::Load(o.output_dir);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  for (const VimLayerWeights& lw : (*m)->weights().layers)
    for (const MambaLayerWeights* L : {&lw.mixer, &lw.backward})
      EXPECT_TRUE(L->quantize_conv_input && L->quantize_output_product && !L->state_rotation.empty());
  std::vector<float> loaded(static_cast<size_t>(test_.count * 10));
  ASSERT_TRUE((*m)->Classify(test_.images.data(), test_.count, loaded.data()).ok());
  auto b = BuildQuantizedVim(o, float_, calib_);
  ASSERT_TRUE(b.ok());
  const std::vector<float> mem = Logits(b->model);
  EXPECT_LE(testing::RelError(loaded.data(), mem.data(), mem.size()), 1e-6);

  auto f = SafetensorsFile::Open(o.output_dir + "/model.safetensors");
  ASSERT_TRUE(f.ok());
  for (const char* n : {"layers.0.mixer.conv1d.weight", "layers.3.mixer.conv1d_b.weight"}) {
    const TensorView* v = (*f)->Find(n);
    ASSERT_TRUE(v != nullptr) << n;
    EXPECT_EQ(v->dtype, DType::kI8) << n;
  }
  EXPECT_TRUE((*f)->Find("layers.3.mixer.state_rotation_b") != nullptr);

  // A state rotation that is not orthogonal (its transpose is folded into x_proj_b) is DATA_LOSS.
  const fs::path bad = dir_ / "bad";
  fs::create_directories(bad);
  fs::copy_file(dir_ / "good" / "config.json", bad / "config.json");
  SafetensorsWriter w;
  for (const auto& [n, v] : (*f)->tensors()) {
    std::vector<uint8_t> bytes(v.data, v.data + v.nbytes);
    if (n == "layers.2.mixer.state_rotation_b") {
      float x;
      std::memcpy(&x, bytes.data(), 4);
      x *= 2.0f;
      std::memcpy(bytes.data(), &x, 4);
    }
    w.Add(n, v.dtype, v.shape, bytes);
  }
  ASSERT_TRUE(w.Write((bad / "model.safetensors").string()).ok());
  auto lb = VimModel::Load(bad.string());
  EXPECT_EQ(lb.status().code(), StatusCode::kDataLoss) << lb.status().ToString();
}

// The command line: mq-engine quantize --scope full on a Vim model writes a scope-full export
// whose classify accuracy (CPU) is the report's quantized accuracy; the ablation flags reach the
// transforms.
TEST_F(VimScopeFullTest, CommandLineQuantizesAndClassifiesScopeFull) {
  MQ_REQUIRE_VISION_FIXTURE();
  const std::string ref = VisionFixture("vim-digits-reference.safetensors");
  const std::string out = (dir_ / "cli").string();
  const auto q = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " quantize --model " + VisionFixture("vim-digits") +
                                     " --scope full --no-smooth-conv --calib " + ref + " --calib-prefix calib_ --samples 64" +
                                     " --eval " + ref + " --eval-prefix test_ --out " + out + " --json 2>&1");
  ASSERT_EQ(q.exit_code, 0) << q.output;
  const nlohmann::json rep = nlohmann::json::parse(q.output);
  EXPECT_EQ(rep["scope"], "full");
  EXPECT_FALSE(rep["transforms"]["s3"].get<bool>());
  EXPECT_TRUE(rep["transforms"]["s4"].get<bool>());
  const auto c = testing::RunCommand(std::string(MQ_ENGINE_BIN) + " classify --model " + out + " --images " + ref +
                                     " --prefix test_ --json 2>&1");
  ASSERT_EQ(c.exit_code, 0) << c.output;
  EXPECT_DOUBLE_EQ(nlohmann::json::parse(c.output)["accuracy"].get<double>(),
                   rep["evaluation"]["quantized_accuracy"].get<double>());
}

}  // namespace
}  // namespace mq
