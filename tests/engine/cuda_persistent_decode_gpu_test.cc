// GPU tests of the persistent decode kernel (cuda/decode_persistent_kernel.cu, DecodePath::
// kPersistent): 16 teacher-forced decode steps at B = 1, 2, 3, 4 from the same prefilled state,
// against the per-stage kernels (the prefill path with T = B) and the layer kernels, on mamba-tiny,
// mamba-small (MQ_FIXTURES_DIR or ../shared/fixtures), the quantized mamba-small
// (MQ_QUANT_SMALL_DIR) and random INT8, W4A8 and FP16 models whose shapes take every branch
// (20-, 12-point and power-of-two R2 Hadamards; the 2.8b width), with the full grid and with 7
// blocks (several tiles per segment, every block owning channels). Checked: every step's logits
// within a stated relative error, greedy ids equal, the recurrent state equal (read back through
// the same per-stage forward), and CUDA-graph generation equal to the layer kernels'. Every test
// skips when no CUDA device is present; the plan's CPU twin is cuda_persistent_decode_twin_test.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda_test_util.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/decode_persistent.h"
#include "cuda/kernel_params.h"
#include "eval/generation.h"
#include "model/model_loader.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::RelError;

#define MQ_REQUIRE_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped (its CPU twin is cuda_persistent_decode_twin_test)"
constexpr int kSteps = 16;
constexpr int64_t kPrefill = 16, kAfter = 4;

// What one path produced from the common prefilled state.
struct Run {
  std::vector<std::vector<float>> logits;  // per step [B, V]
  std::vector<int32_t> greedy;             // per step and row: the greedy kernel's next id
  std::vector<float> after;                // logits of a per-stage forward from the final state
};

// Prefill kPrefill tokens per row (per stage), then kSteps decode steps through `path` with the
// inputs forced (row b, step s: a fixed id), then kAfter more tokens per stage from the state the
// steps left: that forward reads every layer's conv and SSM state through the same kernels for
// every path, so equal `after` logits mean equal state.
void RunPath(CudaMambaModel& m, DecodePath path, int grid, int64_t B, Run* out) {
  const int64_t V = m.config().vocab_size;
  m.SetDecodePath(path, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
  ASSERT_OK(m.SetPersistentGrid(grid));
  ASSERT_EQ(m.DecodesWithPersistentKernel(B), path == DecodePath::kPersistent);
  std::vector<int32_t> ids(static_cast<size_t>(B * kPrefill)), slots(static_cast<size_t>(B));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(2 + (i * 7919) % (V - 2));
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
  ASSERT_OK(m.ResetSlots(slots));
  ASSERT_OK(m.Forward(ids, slots, B, kPrefill, LogitsMode::kNone, nullptr));
  ASSERT_EQ(cudaMemcpy(m.decode_slots(), slots.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
  ASSERT_OK(m.ResetDecodeCounters());
  out->logits.clear();
  out->greedy.clear();
  for (int s = 0; s < kSteps; ++s) {
    std::vector<int32_t> next(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) next[b] = static_cast<int32_t>(3 + (101 * s + 37 * b) % (V - 3));
    ASSERT_EQ(cudaMemcpy(m.decode_ids(), next.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
    ASSERT_OK(m.DecodeStep(B, false));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<float> lg(static_cast<size_t>(B * V));
    ASSERT_EQ(cudaMemcpy(lg.data(), m.logits_dev(), lg.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    out->logits.push_back(std::move(lg));
    std::vector<int32_t> g(static_cast<size_t>(B));
    ASSERT_EQ(cudaMemcpy(g.data(), m.decode_ids(), B * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    out->greedy.insert(out->greedy.end(), g.begin(), g.end());
  }
  std::vector<int32_t> tail(static_cast<size_t>(B * kAfter));
  for (size_t i = 0; i < tail.size(); ++i) tail[i] = static_cast<int32_t>(5 + (i * 4099) % (V - 5));
  ASSERT_OK(m.Forward(tail, slots, B, kAfter, LogitsMode::kLast, &out->after));
}

// Worst per-step logits rel error, greedy mismatches and the state (after) rel error of got vs ref.
struct Diff {
  double logits = 0.0, state = 0.0;
  int64_t greedy_diff = 0;
};
Diff Compare(const Run& got, const Run& ref) {
  Diff d;
  for (size_t s = 0; s < ref.logits.size(); ++s)
    d.logits = std::max(d.logits, RelError(got.logits[s].data(), ref.logits[s].data(), ref.logits[s].size()));
  for (size_t i = 0; i < ref.greedy.size(); ++i) d.greedy_diff += got.greedy[i] != ref.greedy[i];
  d.state = RelError(got.after.data(), ref.after.data(), ref.after.size());
  return d;
}

// The persistent path (grid 0 = one block per SM, and a few blocks: 7, or 33 where d_inner ≥ 4096,
// whose per-block channel data for 4 tokens does not fit 7 blocks' shared memory and is refused
// there, see the twin test) against the per-stage kernels
// (bound max_rel_err, the layer kernels' own bound against them; greedy ids may differ at one
// near-tie of the B·16) and against the layer kernels (bound layer_rel_err: INT8 differs from them only in the norm's double sums' order, so its bound is
// tight; greedy ids equal where the logits are).
void ExpectPersistentAgrees(CudaMambaModel& m, const std::string& what, double max_rel_err, double layer_rel_err) {
  for (int64_t B = 1; B <= kPersistentMaxBatch; ++B) {
    Run stage, layer;
    RunPath(m, DecodePath::kPerStage, 0, B, &stage);
    if (::testing::Test::HasFatalFailure()) return;
    RunPath(m, DecodePath::kLayerKernels, 0, B, &layer);  // RunPath lifts their batch limit to 8
    if (::testing::Test::HasFatalFailure()) return;
    const int few = m.config().intermediate_size >= 4096 ? 33 : 7;
    for (int grid : {0, few}) {
      Run got;
      RunPath(m, DecodePath::kPersistent, grid, B, &got);
      if (::testing::Test::HasFatalFailure()) return;
      const Diff ds = Compare(got, stage);
      std::printf("[gpu] %s persistent decode (grid %s) vs per-stage kernels, B=%lld, %d steps: logits rel error "
                  "%.3e, state %.3e, greedy ids differing %lld\n",
                  what.c_str(), grid == 0 ? "SMs" : std::to_string(grid).c_str(), static_cast<long long>(B), kSteps,
                  ds.logits, ds.state, static_cast<long long>(ds.greedy_diff));
      EXPECT_LE(ds.logits, max_rel_err) << what << " B " << B << " grid " << grid;
      EXPECT_LE(ds.state, max_rel_err) << what << " B " << B << " grid " << grid;
      EXPECT_LE(ds.greedy_diff, 1) << what << " B " << B << " grid " << grid;
      {
        const Diff dl = Compare(got, layer);
        std::printf("[gpu] %s persistent decode (grid %s) vs layer kernels, B=%lld: logits rel error %.3e, state %.3e, "
                    "greedy ids differing %lld\n",
                    what.c_str(), grid == 0 ? "SMs" : std::to_string(grid).c_str(), static_cast<long long>(B), dl.logits,
                    dl.state, static_cast<long long>(dl.greedy_diff));
        EXPECT_LE(dl.logits, layer_rel_err) << what << " B " << B << " grid " << grid;
        EXPECT_LE(dl.state, layer_rel_err) << what << " B " << B << " grid " << grid;
        // Ids can differ only where the logits do: at a near-tie under FP16's other summation order
        // (measured on the H100: one id of a random FP16 model at B 2 and 3).
        EXPECT_LE(dl.greedy_diff, dl.logits > 0 ? 1 : 0) << what << " B " << B << " grid " << grid;
      }
    }
  }
  // Generation from CUDA graphs (the cooperative launch captured): the same tokens as the layer
  // kernels' graphs (INT8) or the per-stage path's.
  const int64_t V = m.config().vocab_size;
  std::vector<std::vector<int32_t>> prompts;
  for (int b = 0; b < 3; ++b) {
    std::vector<int32_t> p;
    for (int i = 0; i < 6; ++i) p.push_back(static_cast<int32_t>(2 + (b * 31 + i * 17) % (V - 2)));
    prompts.push_back(p);
  }
  GenerationOptions go;
  go.max_new_tokens = 12;
  m.SetDecodePath(m.int8() ? DecodePath::kLayerKernels : DecodePath::kPerStage, true, false, kDecodeMaxBatch);
  auto ref = m.Generate(prompts, go, true);
  m.SetDecodePath(DecodePath::kPersistent);
  ASSERT_OK(m.SetPersistentGrid(0));
  auto got = m.Generate(prompts, go, true);
  ASSERT_TRUE(ref.ok()) << ref.status().ToString();
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  int64_t same = 0, total = 0;
  for (size_t b = 0; b < prompts.size(); ++b)
    for (size_t i = 0; i < std::min((*ref)[b].size(), (*got)[b].size()); ++i, ++total) same += (*ref)[b][i] == (*got)[b][i];
  std::printf("[gpu] %s generation from graphs, persistent vs %s: %lld of %lld tokens equal\n", what.c_str(),
              m.int8() ? "layer kernels" : "per-stage", static_cast<long long>(same), static_cast<long long>(total));
  if (m.int8()) EXPECT_EQ(*got, *ref) << what;
  else EXPECT_GE(same, total - 2) << what;
  m.SetDecodePath(DecodePath::kLayerKernels);
}

CudaModelOptions Options() {
  CudaModelOptions o;
  o.max_tokens = 512, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 8;
  return o;
}

// Relative-error bounds: against the per-stage kernels, the layer kernels' own bound
// (cuda_gpu_test DecodeKernelsMatchPerStageOnRandomModels); against the layer kernels, INT8/W4A8
// 1e-3 (the same integer sums and expressions: only the norm's double sums run in another order,
// which can move a float 1/rms by an ulp and, rarely, an INT8 code by one) and FP16 the per-stage
// bound (GEMV products summed in another order, x_proj's split-K with float atomics).
// kVsPerStage: 16 steps of drift between the fused decode kernels and the per-stage ones (the
// INT8 mamba-small measured 5.95e-3 on the H100 at B 1, where the persistent kernel equals the layer
// kernels exactly).
constexpr double kVsPerStage = 1e-2, kVsLayerInt8 = 1e-3, kVsLayerF16 = 5e-3;

TEST(CudaPersistentDecodeGpuTest, MatchesOnFixtures) {
  MQ_REQUIRE_GPU();
  for (const std::string name : {"tiny", "small"}) {
    auto paths = testing::Fixture(name);
    if (paths.model_dir.empty()) {
      std::printf("[gpu] persistent decode: fixture mamba-%s absent, skipped\n", name.c_str());
      continue;
    }
    auto loaded = LoadModel(paths.model_dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    auto model = CudaMambaModel::Create(loaded->weights, Options());
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    ExpectPersistentAgrees(**model, "mamba-" + name + " FP16", kVsPerStage, kVsLayerF16);
  }
  const char* qdir = std::getenv("MQ_QUANT_SMALL_DIR");
  if (qdir == nullptr || !testing::Exists(qdir)) {
    std::printf("[gpu] persistent decode: MQ_QUANT_SMALL_DIR not set, quantized mamba-small skipped\n");
    return;
  }
  auto loaded = LoadModel(qdir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  auto model = CudaMambaModel::Create(loaded->weights, Options());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_TRUE((*model)->int8());
  ExpectPersistentAgrees(**model, "mamba-small INT8 (quantized)", kVsPerStage, kVsLayerInt8);
}

TEST(CudaPersistentDecodeGpuTest, MatchesOnRandomModels) {
  MQ_REQUIRE_GPU();
  struct Case {
    int bits;  // 16 FP16, 8 INT8, 4 W4A8
    int64_t d, layers;
  };
  // d_inner 1280 = 20·64, 1536 = 12·128, 1024 = 2^10 (the block Hadamard), 5120 (2.8b's width).
  for (const Case& c : {Case{8, 640, 3}, Case{8, 768, 3}, Case{8, 512, 3}, Case{16, 640, 3}, Case{4, 768, 2},
                        Case{4, 2560, 2}, Case{8, 2560, 2}}) {
    const RandomModelSpec spec = RandomFamilySpec(c.d, c.layers, c.bits, 11);
    auto model = CudaMambaModel::CreateRandom(spec, Options());
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    const std::string what = std::string(c.bits == 16 ? "random FP16 " : c.bits == 8 ? "random INT8 " : "random W4A8 ") +
                             std::to_string(c.d) + "x" + std::to_string(c.layers);
    ExpectPersistentAgrees(**model, what, kVsPerStage, c.bits == 16 ? kVsLayerF16 : kVsLayerInt8);
  }
}

// Batches beyond the kernel's limit take the per-stage path; a bad grid is refused.
// (This model's layout once failed its cooperative launch with cudaErrorCooperativeLaunchTooLarge:
// the kernel's dynamic shared-memory limit was left at another layout's smaller size; the limit is
// now the device maximum, set once, decode_persistent_kernel.cu PrepareKernel.)
TEST(CudaPersistentDecodeGpuTest, LargerBatchesFallBackAndBadGridIsRefused) {
  MQ_REQUIRE_GPU();
  const RandomModelSpec spec = RandomFamilySpec(256, 2, 8, RandomModelSpec{}.seed, /*vocab=*/500);
  auto model = CudaMambaModel::CreateRandom(spec, Options());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  CudaMambaModel& m = **model;
  m.SetDecodePath(DecodePath::kPersistent);
  for (int64_t B = 1; B <= 8; ++B) {
    EXPECT_EQ(m.DecodesWithPersistentKernel(B), B <= kPersistentMaxBatch) << B;
    ASSERT_OK(m.PrepareDecode(B, true));
    ASSERT_OK(m.DecodeStep(B, true));
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(m.SetPersistentGrid(-1).code(), StatusCode::kInvalidArgument);
  m.SetDecodePath(DecodePath::kLayerKernels);
  EXPECT_FALSE(m.DecodesWithPersistentKernel(1));
}

}  // namespace
}  // namespace mq::cuda
