// Every preset's transforms, fused into the weights with quantization switched off, must give
// the original model's logits: this proves each fusion (γ folding, R1, R5, S2+R2 with S-SiLU,
// S4+R4, SmoothQuant's γ smoothing) is exact.
#include <gtest/gtest.h>

#include "cpu/mamba_forward.h"
#include "quant/quantize_pipeline.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq {
namespace {

struct Case {
  std::string fixture, preset, scope;
};
void PrintTo(const Case& c, std::ostream* os) { *os << c.fixture << "/" << c.preset << "/" << c.scope; }

class FunctionPreservationTest : public ::testing::TestWithParam<Case> {};

TEST_P(FunctionPreservationTest, TransformedModelGivesTheOriginalLogits) {
  const Case c = GetParam();
  auto paths = testing::Fixture(c.fixture);
  MQ_REQUIRE_FIXTURE(paths, c.fixture);
  quant::QuantizeOptions o;
  o.model_dir = paths.model_dir;
  o.preset = c.preset;
  o.scope = c.scope;
  o.calib_text_path = testing::RepoPath("models/text/calib.txt");
  o.num_samples = 8;
  o.seq_len = 64;
  o.transform_only = true;
  auto build = quant::BuildQuantizedModel(o, nullptr);
  ASSERT_TRUE(build.ok()) << build.status().ToString();

  auto ref = SafetensorsFile::Open(paths.reference);
  ASSERT_TRUE(ref.ok());
  const TensorView* ids_view = (*ref)->Find("input_ids");
  const int64_t B = ids_view->shape[0], L = ids_view->shape[1];
  std::vector<int32_t> ids = testing::ToInt32(*ids_view);
  std::vector<float> ref_logits = ToFloat32(*(*ref)->Find("logits"));

  cpu::MambaState state = cpu::MambaState::Zeros(build->model.config, B);
  std::vector<float> logits;
  ASSERT_TRUE(cpu::MambaForward(build->model, ids.data(), B, L, &state, &logits).ok());
  const double err = testing::RelError(logits.data(), ref_logits.data(), logits.size());
  EXPECT_LE(err, 1e-4) << c.preset << "/" << c.scope << " on " << c.fixture;
  // The transforms did change the weights (else the test proves nothing).
  if (c.preset != "rtn") {
    EXPECT_NE(build->model.layers[0].in_proj.weight, build->original.layers[0].in_proj.weight);
  }
}

std::vector<Case> AllCases() {
  std::vector<Case> cases;
  for (const char* f : {"tiny", "small"})
    for (const char* p : {"rtn", "smoothquant", "quarot", "mambaquant"})
      for (const char* s : {"linear", "full"}) cases.push_back({f, p, s});
  return cases;
}

INSTANTIATE_TEST_SUITE_P(Presets, FunctionPreservationTest, ::testing::ValuesIn(AllCases()),
                         [](const ::testing::TestParamInfo<Case>& info) {
                           return info.param.fixture + "_" + info.param.preset + "_" + info.param.scope;
                         });

}  // namespace
}  // namespace mq
