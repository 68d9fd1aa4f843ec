// Vim quantization on the vim-digits fixture: every preset's transforms preserve the function,
// MambaQuant W8A8 keeps the accuracy, and the export loads back to the same logits.
#include <gtest/gtest.h>

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

class VimQuantizeTest : public ::testing::Test {
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
    float_logits_ = Logits(float_, "");
    dir_ = fs::temp_directory_path() / ("mq_vim_quant_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::vector<float> Logits(const VimWeights& w, const std::string& qc) {
    auto m = VimModel::FromWeights(w, qc);
    std::vector<float> l(static_cast<size_t>(test_.count * 10));
    EXPECT_TRUE(m->Classify(test_.images.data(), test_.count, l.data()).ok());
    return l;
  }

  VimWeights float_;
  ImageSet calib_, test_;
  std::vector<float> float_logits_;
  fs::path dir_;
};

TEST_F(VimQuantizeTest, EveryPresetsTransformsPreserveTheFunction) {
  MQ_REQUIRE_VISION_FIXTURE();
  for (const char* preset : {"rtn", "smoothquant", "quarot", "mambaquant"}) {
    VimQuantizeOptions o;
    o.preset = preset;
    o.transform_only = true;
    auto b = BuildQuantizedVim(o, float_, calib_);
    ASSERT_TRUE(b.ok()) << preset << ": " << b.status().ToString();
    const std::vector<float> l = Logits(b->model, "");
    EXPECT_LE(testing::RelError(l.data(), float_logits_.data(), l.size()), 1e-4) << preset;
  }
  // The transforms really changed the weights (mambaquant: R1 rotated in_proj, S2 set the gate).
  VimQuantizeOptions o;
  o.transform_only = true;
  auto b = BuildQuantizedVim(o, float_, calib_);
  ASSERT_TRUE(b.ok());
  EXPECT_FALSE(b->model.layers[0].mixer.gate_scale.empty());
  EXPECT_TRUE(b->model.layers[0].mixer.out_proj.input_transform != nullptr);
  EXPECT_GT(testing::RelError(b->model.layers[0].mixer.in_proj.weight.data(),
                              float_.layers[0].mixer.in_proj.weight.data(), float_.layers[0].mixer.in_proj.weight.size()),
            0.1);
  EXPECT_GT(testing::RelError(b->model.layers[1].backward.dt_proj.weight.data(),
                              float_.layers[1].backward.dt_proj.weight.data(), float_.layers[1].backward.dt_proj.weight.size()),
            0.1);
}

TEST_F(VimQuantizeTest, MambaQuantW8A8KeepsTheAccuracy) {
  MQ_REQUIRE_VISION_FIXTURE();
  const double float_acc = Accuracy(TopClasses(float_logits_, 10), test_.labels);
  for (const char* act : {"per_token", "per_tensor"}) {
    VimQuantizeOptions o;
    o.act_granularity = act;
    auto b = BuildQuantizedVim(o, float_, calib_);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    ASSERT_TRUE(b->model.layers[0].mixer.in_proj.quant.has_value());
    ASSERT_TRUE(b->model.layers[3].backward.dt_proj.quant.has_value());
    const std::vector<float> q = Logits(b->model, b->quantization_config.dump());
    const double acc = Accuracy(TopClasses(q, 10), test_.labels);
    const LogitComparison cmp = CompareLogits(float_logits_, q, 10);
    EXPECT_GE(acc, float_acc - 0.01) << act;
    EXPECT_GE(cmp.top1_agreement, 0.97) << act;
    // Quantized, not float: the logits moved, but little.
    const double rel = testing::RelError(q.data(), float_logits_.data(), q.size());
    EXPECT_GT(rel, 1e-6) << act;
    EXPECT_LT(rel, 0.1) << act;
  }
}

// One δ channel 1000× larger in every block and direction (W_xp[δ row 0] ×1000, W_dt[:, 0] ÷1000:
// the same function): without S5, R5 spreads the large x_proj row over every δ row and 4-bit rows
// lose the others; S5 first equalizes the channel and the accuracy stays.
TEST_F(VimQuantizeTest, S5ProtectsR5FromADtOutlier) {
  MQ_REQUIRE_VISION_FIXTURE();
  VimWeights stressed = float_;
  const int64_t E = stressed.E(), R = stressed.R();
  for (VimLayerWeights& lw : stressed.layers)
    for (MambaLayerWeights* L : {&lw.mixer, &lw.backward}) {
      for (int64_t k = 0; k < E; ++k) L->x_proj.weight[k] *= 1000.0f;
      for (int64_t e = 0; e < E; ++e) L->dt_proj.weight[e * R] /= 1000.0f;
    }
  const std::vector<float> sl = Logits(stressed, "");
  EXPECT_LE(testing::RelError(sl.data(), float_logits_.data(), sl.size()), 1e-4);
  const double float_acc = Accuracy(TopClasses(float_logits_, 10), test_.labels);
  for (bool s5 : {true, false}) {
    VimQuantizeOptions o;
    o.bits = "w4a8";
    o.smooth_s5 = s5;
    auto b = BuildQuantizedVim(o, stressed, calib_);
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    EXPECT_EQ(b->quantization_config["transforms"]["s5"].get<bool>(), s5);
    const double acc = Accuracy(TopClasses(Logits(b->model, "q"), 10), test_.labels);
    if (s5) {
      EXPECT_GE(acc, float_acc - 0.01);
    } else {
      EXPECT_LT(acc, 0.5);
    }
  }
}

TEST_F(VimQuantizeTest, ExportLoadsBackToTheSameLogitsAndReport) {
  MQ_REQUIRE_VISION_FIXTURE();
  for (const char* act : {"per_token", "per_tensor"}) {
    VimQuantizeOptions o;
    o.model_dir = VisionFixture("vim-digits");
    o.output_dir = (dir_ / act).string();
    o.calib_path = VisionFixture("vim-digits-reference.safetensors");
    o.calib_prefix = "calib_";
    o.eval_path = o.calib_path;
    o.eval_prefix = "test_";
    o.bits = "w4a8";
    o.act_granularity = act;
    auto r = QuantizeVimModel(o);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    auto m = VimModel::Load(o.output_dir);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_TRUE((*m)->quantized());
    std::vector<float> loaded(static_cast<size_t>(test_.count * 10));
    ASSERT_TRUE((*m)->Classify(test_.images.data(), test_.count, loaded.data()).ok());
    auto b = BuildQuantizedVim(o, float_, calib_);
    ASSERT_TRUE(b.ok());
    const std::vector<float> mem = Logits(b->model, "x");
    EXPECT_LE(testing::RelError(loaded.data(), mem.data(), mem.size()), 1e-6) << act;
    // The report's accuracies are what the loaded model and the float model give.
    const nlohmann::json rep = nlohmann::json::parse(r->report_json);
    EXPECT_DOUBLE_EQ(rep["evaluation"]["quantized_accuracy"].get<double>(), Accuracy(TopClasses(loaded, 10), test_.labels));
    EXPECT_DOUBLE_EQ(rep["evaluation"]["float_accuracy"].get<double>(), Accuracy(TopClasses(float_logits_, 10), test_.labels));
    EXPECT_DOUBLE_EQ(rep["evaluation"]["top1_agreement"].get<double>(), CompareLogits(float_logits_, loaded, 10).top1_agreement);
    // W4A8: every stored level within ±7.
    auto f = SafetensorsFile::Open(o.output_dir + "/model.safetensors");
    ASSERT_TRUE(f.ok());
    const TensorView* v = (*f)->Find("layers.2.mixer.x_proj_b.weight");
    ASSERT_TRUE(v != nullptr);
    EXPECT_EQ(v->dtype, DType::kI8);
    for (size_t i = 0; i < v->nbytes; ++i) ASSERT_LE(std::abs(static_cast<int>(reinterpret_cast<const int8_t*>(v->data)[i])), 7);
    EXPECT_EQ((*f)->Find("layers.0.mixer.in_proj.input_scale") != nullptr, std::string(act) == "per_tensor");
    // config.json keeps what the engine does not read but clients do (class names, the input
    // normalization, dataset notes): every key of the source's, with the same value.
    std::ifstream src_in(o.model_dir + "/config.json"), out_in(o.output_dir + "/config.json");
    const nlohmann::json src = nlohmann::json::parse(src_in), out = nlohmann::json::parse(out_in);
    ASSERT_TRUE(src.contains("id2label"));
    for (const auto& [key, value] : src.items()) EXPECT_EQ(out.value(key, nlohmann::json()), value) << key;
    EXPECT_TRUE(out.contains("quantization_config"));
  }
}

TEST_F(VimQuantizeTest, CorruptExportIsRejected) {
  MQ_REQUIRE_VISION_FIXTURE();
  VimQuantizeOptions o;
  o.model_dir = VisionFixture("vim-digits");
  o.output_dir = (dir_ / "good").string();
  o.calib_path = VisionFixture("vim-digits-reference.safetensors");
  o.calib_prefix = "calib_";
  o.bits = "w4a8";
  ASSERT_TRUE(QuantizeVimModel(o).ok());
  // A level outside the 4-bit range.
  const fs::path bad = dir_ / "bad";
  fs::create_directories(bad);
  fs::copy_file(dir_ / "good" / "config.json", bad / "config.json");
  auto f = SafetensorsFile::Open((dir_ / "good" / "model.safetensors").string());
  ASSERT_TRUE(f.ok());
  SafetensorsWriter w;
  for (const auto& [n, v] : (*f)->tensors()) {
    std::vector<uint8_t> bytes(v.data, v.data + v.nbytes);
    if (n == "layers.1.mixer.out_proj.weight") bytes[3] = 100;
    w.Add(n, v.dtype, v.shape, bytes);
  }
  ASSERT_TRUE(w.Write((bad / "model.safetensors").string()).ok());
  auto m = VimModel::Load(bad.string());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss) << m.status().ToString();
  // An online transform of the wrong size.
  std::ifstream in(dir_ / "good" / "config.json");
  nlohmann::json j = nlohmann::json::parse(in);
  j["quantization_config"]["online_transforms"][0]["size"] = 64;
  std::ofstream(bad / "config.json", std::ios::trunc) << j.dump();
  fs::copy_file(dir_ / "good" / "model.safetensors", bad / "model.safetensors", fs::copy_options::overwrite_existing);
  EXPECT_EQ(VimModel::Load(bad.string()).status().code(), StatusCode::kDataLoss);
}

TEST_F(VimQuantizeTest, UnsupportedOptionsAreErrors) {
  MQ_REQUIRE_VISION_FIXTURE();
  VimQuantizeOptions o;
  o.scope = "everything";
  EXPECT_EQ(BuildQuantizedVim(o, float_, calib_).status().code(), StatusCode::kInvalidArgument);
  o.scope = "linear";
  o.preset = "gptq";
  EXPECT_EQ(BuildQuantizedVim(o, float_, calib_).status().code(), StatusCode::kInvalidArgument);
  o.preset = "mambaquant";
  o.num_samples = -1;
  EXPECT_EQ(BuildQuantizedVim(o, float_, calib_).status().code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq
