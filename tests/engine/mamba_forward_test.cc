// The CPU float32 forward against transformers' reference outputs on the fixtures.
#include "cpu/mamba_forward.h"

#include <cmath>

#include <gtest/gtest.h>

#include "eval/generation.h"
#include "io/safetensors.h"
#include "model/mamba_weights.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq {
namespace {

using testing::RelError;
using testing::ToInt32;

class HiddenCapture : public ForwardObserver {
 public:
  bool Wants(ActivationSite s) const override {
    return s == ActivationSite::kLayerOutput || s == ActivationSite::kFinalNorm;
  }
  void Observe(int layer, ActivationSite, const float* x, int64_t rows, int64_t cols) override {
    // Sequence 0 is rows [0, seqlen).
    layers.emplace_back(x, x + seqlen * cols);
  }
  int64_t seqlen = 0;
  std::vector<std::vector<float>> layers;
};

class ForwardFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(ForwardFixtureTest, LogitsAndHiddenStatesMatchTransformers) {
  auto paths = testing::Fixture(GetParam());
  MQ_REQUIRE_FIXTURE(paths, GetParam());
  auto weights = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  auto ref = SafetensorsFile::Open(paths.reference);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  const TensorView* ids_view = (*ref)->Find("input_ids");
  const TensorView* logits_view = (*ref)->Find("logits");
  const TensorView* hidden_view = (*ref)->Find("hidden_states_seq0");
  ASSERT_NE(ids_view, nullptr);
  ASSERT_NE(logits_view, nullptr);
  ASSERT_NE(hidden_view, nullptr);
  const int64_t B = ids_view->shape[0], L = ids_view->shape[1];
  std::vector<int32_t> ids = ToInt32(*ids_view);

  cpu::MambaState state = cpu::MambaState::Zeros(weights->config, B);
  HiddenCapture capture;
  capture.seqlen = L;
  cpu::ForwardOptions opts;
  opts.observer = &capture;
  std::vector<float> logits;
  ASSERT_TRUE(cpu::MambaForward(*weights, ids.data(), B, L, &state, &logits, opts).ok());
  std::vector<float> ref_logits = ToFloat32(*logits_view);
  ASSERT_EQ(logits.size(), ref_logits.size());
  const double err = RelError(logits.data(), ref_logits.data(), logits.size());
  EXPECT_LE(err, 1e-4) << "logits relative error";
  RecordProperty("logits_rel_error", std::to_string(err));

  std::vector<float> ref_hidden = ToFloat32(*hidden_view);
  const int64_t layers = weights->config.num_hidden_layers, d = weights->d();
  ASSERT_EQ(static_cast<int64_t>(capture.layers.size()), layers + 1);
  for (int64_t i = 0; i <= layers; ++i) {
    const double e = RelError(capture.layers[i].data(), ref_hidden.data() + i * L * d, static_cast<size_t>(L * d));
    EXPECT_LE(e, 1e-4) << "hidden state entry " << i;
  }
}

TEST_P(ForwardFixtureTest, PrefillThenStepDecodeEqualsFullForward) {
  auto paths = testing::Fixture(GetParam());
  MQ_REQUIRE_FIXTURE(paths, GetParam());
  auto weights = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(weights.ok());
  auto ref = SafetensorsFile::Open(paths.reference);
  ASSERT_TRUE(ref.ok());
  const TensorView* ids_view = (*ref)->Find("input_ids");
  const int64_t B = ids_view->shape[0], L = ids_view->shape[1], V = weights->V();
  std::vector<int32_t> ids = ToInt32(*ids_view);

  cpu::MambaState full_state = cpu::MambaState::Zeros(weights->config, B);
  std::vector<float> full;
  ASSERT_TRUE(cpu::MambaForward(*weights, ids.data(), B, L, &full_state, &full).ok());

  // Prefill the first half, then one token at a time for the rest, all sequences batched.
  const int64_t P = L / 2;
  std::vector<int32_t> prefix;
  for (int64_t b = 0; b < B; ++b) prefix.insert(prefix.end(), ids.begin() + b * L, ids.begin() + b * L + P);
  cpu::MambaState state = cpu::MambaState::Zeros(weights->config, B);
  std::vector<float> logits;
  ASSERT_TRUE(cpu::MambaForward(*weights, prefix.data(), B, P, &state, &logits).ok());
  for (int64_t b = 0; b < B; ++b)
    EXPECT_LE(RelError(logits.data() + (b * P + P - 1) * V, full.data() + (b * L + P - 1) * V, V), 1e-5);
  for (int64_t l = P; l < L; ++l) {
    std::vector<int32_t> step(B);
    for (int64_t b = 0; b < B; ++b) step[b] = ids[b * L + l];
    ASSERT_TRUE(cpu::MambaForward(*weights, step.data(), B, 1, &state, &logits).ok());
    for (int64_t b = 0; b < B; ++b)
      ASSERT_LE(RelError(logits.data() + b * V, full.data() + (b * L + l) * V, V), 1e-5) << "b=" << b << " l=" << l;
  }
  // The final recurrent states agree too.
  EXPECT_LE(RelError(state.ssm.data(), full_state.ssm.data(), state.ssm.size()), 1e-5);
  EXPECT_LE(RelError(state.conv.data(), full_state.conv.data(), state.conv.size()), 1e-6);
}

TEST_P(ForwardFixtureTest, GreedyGenerationEqualsTransformers) {
  auto paths = testing::Fixture(GetParam());
  MQ_REQUIRE_FIXTURE(paths, GetParam());
  auto weights = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(weights.ok());
  auto ref = SafetensorsFile::Open(paths.reference);
  ASSERT_TRUE(ref.ok());
  const TensorView* prompt_view = (*ref)->Find("generate_prompt_ids");
  const TensorView* greedy_view = (*ref)->Find("generate_greedy_ids");
  ASSERT_NE(prompt_view, nullptr);
  ASSERT_NE(greedy_view, nullptr);
  std::vector<int32_t> p = ToInt32(*prompt_view), g = ToInt32(*greedy_view);
  const int64_t B = prompt_view->shape[0], P = prompt_view->shape[1], G = greedy_view->shape[1];
  std::vector<std::vector<int32_t>> prompts(B);
  for (int64_t b = 0; b < B; ++b) prompts[b].assign(p.begin() + b * P, p.begin() + (b + 1) * P);
  GenerationOptions go;
  go.max_new_tokens = 32;
  auto out = Generate(*weights, prompts, go);
  ASSERT_TRUE(out.ok()) << out.status().ToString();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<int32_t> expected(g.begin() + b * G, g.begin() + (b + 1) * G);
    EXPECT_EQ((*out)[b], expected) << "row " << b;
  }
}

TEST(ForwardInputTest, RejectsOutOfVocabularyIdsAndWrongStateBatch) {
  auto weights = LoadMambaWeights(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(weights.ok());
  cpu::MambaState state = cpu::MambaState::Zeros(weights->config, 1);
  std::vector<float> logits;
  int32_t bad = static_cast<int32_t>(weights->V());
  Status st = cpu::MambaForward(*weights, &bad, 1, 1, &state, &logits);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
  int32_t ok_ids[2] = {5, 6};
  st = cpu::MambaForward(*weights, ok_ids, 2, 1, &state, &logits);
  EXPECT_EQ(st.code(), StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, ForwardFixtureTest, ::testing::Values("tiny", "small"));

}  // namespace
}  // namespace mq
