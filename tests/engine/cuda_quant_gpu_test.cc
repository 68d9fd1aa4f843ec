// GPU quantization (cuda/cuda_quant_accelerator.h): the accelerator contract that the CPU passes
// in CI (quant_accelerator_test, its CPU twin), then whole jobs on mamba-small built on the GPU
// against the same jobs built on the CPU. Skips without a CUDA device.
//
// Environment (set by tests/gpu/run.sh): MQ_FIXTURES_DIR holds mamba-small when ../shared/fixtures
// is absent (testing::Fixture looks there).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "cpu/mamba_forward.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/cuda_perplexity.h"
#include "cuda/cuda_quant_accelerator.h"
#include "quant/quant_spec.h"
#include "quant_accelerator_contract.h"

namespace mq::cuda {
namespace {

#define MQ_REQUIRE_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped (its CPU twin is quant_accelerator_test)"

std::unique_ptr<CudaQuantAccelerator> Gpu() {
  auto a = CudaQuantAccelerator::Create();
  EXPECT_TRUE(a.ok()) << a.status().ToString();
  return a.ok() ? std::move(*a) : nullptr;
}

TEST(CudaQuantGpuTest, RotationProducts) {
  MQ_REQUIRE_GPU();
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  std::printf("[gpu] quantization device: %s\n", gpu->name().c_str());
  testing::CheckRotationProducts(*gpu);
}

TEST(CudaQuantGpuTest, Eigenvectors) {
  MQ_REQUIRE_GPU();
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  testing::CheckEigenvectors(*gpu);
}

TEST(CudaQuantGpuTest, CalibrationMatchesNaiveStatistics) {
  MQ_REQUIRE_GPU();
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  testing::CheckCalibration(*gpu, 2e-2);  // FP16 activations
}

TEST(CudaQuantGpuTest, CompareMatchesCompareModels) {
  MQ_REQUIRE_GPU();
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  testing::CheckCompare(*gpu, 5e-3, 0.02, 0.25);  // FP16 reference model, GPU INT8 candidate
}

TEST(CudaQuantGpuTest, RefusesWhatItCannotRun) {
  MQ_REQUIRE_GPU();
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  quant::QuantizeOptions o;
  ASSERT_TRUE((*gpu).CheckSupported(*quant::QuantSpec::FromOptions(o)).ok());
  o.scope = "full";  // per_step_channel state scales: runs on the GPU
  ASSERT_TRUE((*gpu).CheckSupported(*quant::QuantSpec::FromOptions(o)).ok());
  for (int which = 0; which < 3; ++which) {
    quant::QuantizeOptions bad;
    if (which == 0) bad.scope = "full", bad.state_granularity = "per_step";
    if (which == 1) bad.act_granularity = "per_tensor";
    if (which == 2) bad.quantize_lm_head = true;
    auto spec = quant::QuantSpec::FromOptions(bad);
    ASSERT_TRUE(spec.ok());
    EXPECT_EQ(gpu->CheckSupported(*spec).code(), StatusCode::kUnimplemented) << which;
  }
}

double GpuPerplexity(const MambaWeights& w, const std::vector<int32_t>& tokens) {
  CudaModelOptions mo;
  mo.max_tokens = mo.max_logit_rows = 16 * 256;
  mo.max_batch = mo.num_slots = 16;
  auto m = CudaMambaModel::Create(w, mo);
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  if (!m.ok()) return NAN;
  auto r = EvaluatePerplexityCuda(**m, tokens, 256, 16);
  EXPECT_TRUE(r.ok()) << r.status().ToString();
  return r.ok() ? r->perplexity : NAN;
}

// The mambaquant W8A8 job built on the GPU against the same job on the CPU: the transforms keep
// the model's function (checked on the CPU forward), and the quantized perplexity on eval.txt
// is within 0.3% of the CPU-built model's.
TEST(CudaQuantGpuTest, JobOnMambaSmallMatchesCpuJob) {
  MQ_REQUIRE_GPU();
  const testing::FixturePaths small = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(small, "small");
  auto gpu = Gpu();
  ASSERT_NE(gpu, nullptr);
  quant::QuantizeOptions o;
  o.model_dir = small.model_dir;
  o.calib_text_path = testing::RepoPath("models/text/calib.txt");
  o.num_samples = 32;
  o.seq_len = 256;

  // Function preservation of the GPU-fused transforms, on the CPU forward.
  quant::QuantizeOptions t = o;
  t.transform_only = true;
  auto transformed = quant::BuildQuantizedModel(t, nullptr, gpu.get());
  ASSERT_TRUE(transformed.ok()) << transformed.status().ToString();
  {
    const MambaWeights& a = transformed->original;
    const MambaWeights& b = transformed->model;
    std::vector<int32_t> ids(64);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919) % static_cast<size_t>(a.V()));
    std::vector<float> la, lb;
    cpu::MambaState sa = cpu::MambaState::Zeros(a.config, 1), sb = cpu::MambaState::Zeros(b.config, 1);
    const Status fa = cpu::MambaForward(a, ids.data(), 1, 64, &sa, &la);
    ASSERT_TRUE(fa.ok()) << fa.ToString();
    const Status fb = cpu::MambaForward(b, ids.data(), 1, 64, &sb, &lb);
    ASSERT_TRUE(fb.ok()) << fb.ToString();
    const double err = testing::RelError(lb.data(), la.data(), la.size());
    std::printf("[gpu] mamba-small transforms fused on the GPU: logits rel error vs original %.3e\n", err);
    EXPECT_LE(err, 1e-4);
  }

  for (const std::string scope : {"linear", "full"}) {
    o.scope = scope;
    auto on_gpu = quant::BuildQuantizedModel(o, nullptr, gpu.get());
    ASSERT_TRUE(on_gpu.ok()) << on_gpu.status().ToString();
    auto on_cpu = quant::BuildQuantizedModel(o, nullptr, nullptr);
    ASSERT_TRUE(on_cpu.ok()) << on_cpu.status().ToString();
    const std::vector<int32_t> tokens =
        testing::EvalTextTokens(o.model_dir, static_cast<int32_t>(on_cpu->original.config.eos_token_id));
    ASSERT_FALSE(tokens.empty());
    const double ppl_float = GpuPerplexity(on_cpu->original, tokens);
    const double ppl_gpu = GpuPerplexity(on_gpu->model, tokens);
    const double ppl_cpu = GpuPerplexity(on_cpu->model, tokens);
    const double rel = std::fabs(ppl_gpu - ppl_cpu) / ppl_cpu;
    std::printf("[gpu] mamba-small mambaquant w8a8 scope %s perplexity: float %.4f, GPU-built %.4f, CPU-built %.4f "
                "(%.3f%%)\n", scope.c_str(), ppl_float, ppl_gpu, ppl_cpu, 100 * rel);
    EXPECT_LE(rel, 3e-3) << scope;

    // The job's own evaluation stage on the GPU agrees with those numbers.
    auto cmp = gpu->Compare(on_gpu->original, on_gpu->model, tokens, 256, nullptr);
    ASSERT_TRUE(cmp.ok()) << cmp.status().ToString();
    EXPECT_NEAR(cmp->reference.perplexity, ppl_float, 1e-3 * ppl_float);
    EXPECT_NEAR(cmp->candidate.perplexity, ppl_gpu, 1e-3 * ppl_gpu);
    std::printf("[gpu] GPU evaluation stage (scope %s): top-1 %.4f, KL %.5f\n", scope.c_str(), cmp->top1_agreement,
                cmp->mean_kl);
  }
}

}  // namespace
}  // namespace mq::cuda
