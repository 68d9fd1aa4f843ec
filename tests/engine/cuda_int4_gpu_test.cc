// GPU tests of the packed-int4 (W4A8) path of the CUDA backend: the int4 GEMV and the unpack
// kernel against the INT8 GEMV, cuBLASLt and the CPU on the same 4-bit levels (integer-identical),
// and a W4A8 model against the same weights run through the INT8 path (bit-identical logits and
// tokens, per stage and through the packed layer kernels). Every test skips when no CUDA device is present; its CPU twin is in
// tests/engine/cuda_int4_twin_test.cc, which CI runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <vector>

#include "cuda/cublaslt_gemm.h"
#include "cuda/cuda_check.h"
#include "cuda_test_util.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/device_buffer.h"
#include "cuda/hd_math.h"
#include "cuda/int4_kernels.h"
#include "cuda/kernel_params.h"
#include "model/int4_pack.h"
#include "model/linear.h"
#include "model/model_shapes.h"
#include "quant/quantize_pipeline.h"
#include "test_paths.h"
#include "tiny_quant_options.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::RelError;

#define MQ_REQUIRE_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped (its CPU twin is cuda_int4_twin_test)"
std::vector<int8_t> RandomLevels(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> level(-7, 7);
  std::vector<int8_t> q(n);
  for (auto& v : q) v = static_cast<int8_t>(level(rng));
  return q;
}

std::vector<int8_t> PadRows(const std::vector<int8_t>& q, int64_t out, int64_t k, int64_t kp) {
  std::vector<int8_t> p(static_cast<size_t>(out * kp), 0);
  for (int64_t r = 0; r < out; ++r) std::copy_n(q.begin() + r * k, k, p.begin() + r * kp);
  return p;
}

// Twin: CudaInt4TwinTest.Int4GemvBlockingCoversEveryChunkAndEqualsTheInt8Products and
// UnpackKernelEqualsTheInt8UploadOfTheSameLevels.
TEST(CudaInt4GpuTest, Int4GemvAndUnpackEqualInt8GemvCublasLtAndCpu) {
  MQ_REQUIRE_GPU();
  auto gemm = CublasLtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status().ToString();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{3072, 768}, {80, 1536}, {1536, 48}, {768, 1536}, {36, 128},
                                                           {128, 4},    {7, 5},     {33, 37},   {10240, 2560}};
  for (const auto& [out, k] : shapes) {
    const int64_t kp = hd::RoundUp(k, 16);
    const std::vector<int8_t> q = RandomLevels(static_cast<size_t>(out * k), out + 31 * k);
    auto packed = PackInt4Rows(q.data(), out, k, kp / 2);
    ASSERT_TRUE(packed.ok());
    const std::vector<int8_t> w8 = PadRows(q, out, k, kp);
    auto dw4 = Up(*packed);
    auto dw8 = Up(w8);
    // The unpack kernel reproduces the INT8 upload. cuBLASLt's INT8 GEMM takes `out` a multiple of
    // 4 only (the model's linears are: CudaMambaModel::Init), so the unpacked weights get zero rows
    // up to outp; their accumulators must come out zero.
    const int64_t outp = hd::RoundUp(out, 4);
    auto dun = DeviceBuffer<int8_t>::Allocate(static_cast<size_t>(outp * kp));
    ASSERT_TRUE(dun.ok());
    ASSERT_EQ(cudaMemset(dun->get(), 0, dun->bytes()), cudaSuccess);
    ASSERT_OK(LaunchUnpackInt4(dw4.get(), out, kp, dun->get(), nullptr));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    std::vector<int8_t> w8p = w8;
    w8p.resize(static_cast<size_t>(outp * kp), 0);
    ASSERT_EQ(Down(*dun), w8p) << "unpack " << out << "x" << k;
    for (int64_t tokens : {1, 2, 3, 8, 17, 64}) {
      if (out * k > 4'000'000 && tokens > 8) continue;
      std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * kp), tokens + 7 * k);
      for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * kp + k, x.begin() + (t + 1) * kp, 0);
      std::vector<int32_t> ref(static_cast<size_t>(tokens * out));
      Int8MatMulTransposedB(x.data(), w8.data(), ref.data(), tokens, kp, out);
      auto dx = Up(x);
      auto dacc = DeviceBuffer<int32_t>::Allocate(ref.size());
      ASSERT_TRUE(dacc.ok());
      ASSERT_EQ(cudaMemset(dacc->get(), 0x7f, dacc->bytes()), cudaSuccess);
      Int4GemvParams p4;
      p4.w = dw4.get(), p4.x = dx.get(), p4.ldx = kp, p4.acc = dacc->get(), p4.ldc = out;
      p4.out = out, p4.tokens = tokens, p4.k = kp;
      ASSERT_OK(LaunchInt4Gemv(p4, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(Down(*dacc), ref) << "int4 GEMV out " << out << " k " << k << " tokens " << tokens;
      ASSERT_EQ(cudaMemset(dacc->get(), 0x7f, dacc->bytes()), cudaSuccess);
      Int8GemvParams p8;
      p8.w = dw8.get(), p8.ldw = kp, p8.x = dx.get(), p8.ldx = kp, p8.acc = dacc->get(), p8.ldc = out;
      p8.out = out, p8.tokens = tokens, p8.k = kp;
      ASSERT_OK(LaunchInt8Gemv(p8, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(Down(*dacc), ref) << "int8 GEMV out " << out << " k " << k << " tokens " << tokens;
      auto daccp = DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(tokens * outp));
      ASSERT_TRUE(daccp.ok());
      ASSERT_EQ(cudaMemset(daccp->get(), 0x7f, daccp->bytes()), cudaSuccess);
      ASSERT_OK((*gemm)->Int8(dun->get(), kp, dx.get(), kp, daccp->get(), outp, outp, tokens, kp, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      std::vector<int32_t> refp(static_cast<size_t>(tokens * outp), 0);
      for (int64_t t = 0; t < tokens; ++t) std::copy_n(ref.begin() + t * out, out, refp.begin() + t * outp);
      ASSERT_EQ(Down(*daccp), refp) << "cuBLASLt on unpacked out " << out << " (" << outp << ") k " << k << " tokens "
                                    << tokens;
    }
  }
}

// One decode step's logits through EnqueueDecodeLogits (the path DecodeStep and serving take: the
// layer kernels for small B): ids and slots in, [B, V] out.
std::vector<float> DecodeLogits(CudaMambaModel& m, const std::vector<int32_t>& ids, const std::vector<int32_t>& slots) {
  const int64_t B = static_cast<int64_t>(ids.size()), V = m.config().vocab_size;
  std::vector<float> out(static_cast<size_t>(B * V));
  EXPECT_EQ(cudaMemcpy(m.decode_ids(), ids.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(m.decode_slots(), slots.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
  const Status s = m.EnqueueDecodeLogits(B);
  EXPECT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  EXPECT_EQ(cudaMemcpy(out.data(), m.logits_dev(), out.size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
  return out;
}

StatusOr<MambaWeights> TinyW4A8() {
  quant::QuantizeOptions qo = testing::TinyQuantOptions("w4a8");
  MQ_ASSIGN_OR_RETURN(quant::QuantizedModelBuild build, quant::BuildQuantizedModel(qo, nullptr));
  return std::move(build.model);
}

void ExpectEqualsTheInt8Upload(const MambaWeights& w4);

// Twin: CudaInt4TwinTest.W4A8ModelLinearsReachTheKernelsAsTheInt8PathsWeights and
// PackedLayerKernelGemvEqualsTheInt8Products. A W4A8 model (MambaQuant on mamba-tiny) against the
// same integer weights uploaded as INT8: prefill (more tokens than int4_gemv_max_tokens: unpack +
// cuBLASLt), per-stage decode (int4 GEMV), decode through the layer kernels (packed weights,
// B = 1, 3, 8) and greedy generation from a CUDA graph must agree bit for bit, with half the
// linear weight bytes.
TEST(CudaInt4GpuTest, W4A8ModelEqualsTheInt8PathOnTheSameWeights) {
  MQ_REQUIRE_GPU();
  auto w4 = TinyW4A8();
  ASSERT_TRUE(w4.ok()) << w4.status().ToString();
  ExpectEqualsTheInt8Upload(*w4);
}

// Twin: CudaInt4TwinTest.MixedWidthModelEqualsTheInt8PathOnTheCpu. A w4a8 model with layer 1 kept
// at 8-bit weights (format version 3's w8_layers): layer 0 runs the packed kernels, layer 1 the
// INT8 ones, in every path above, bit-identical to the all-INT8 upload of the same levels.
TEST(CudaInt4GpuTest, MixedWidthModelEqualsTheInt8PathOnTheSameWeights) {
  MQ_REQUIRE_GPU();
  auto w = TinyW4A8();
  ASSERT_TRUE(w.ok()) << w.status().ToString();
  ASSERT_EQ(w->layers.size(), 2u);
  for (mq::Linear* l : {&w->layers[1].in_proj, &w->layers[1].x_proj, &w->layers[1].dt_proj, &w->layers[1].out_proj})
    l->quant->weight_bits = 8;
  CudaModelOptions o;
  o.max_tokens = 512, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 512;
  auto m = CudaMambaModel::Create(*w, o);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_TRUE((*m)->mixed_width());
  // A layer whose linears disagree on their width is refused.
  MambaWeights bad = *w;
  bad.layers[1].x_proj.quant->weight_bits = 4;
  EXPECT_EQ(CudaMambaModel::Create(bad, o).status().code(), StatusCode::kUnimplemented);
  ExpectEqualsTheInt8Upload(*w);
}

void ExpectEqualsTheInt8Upload(const MambaWeights& w4) {
  MambaWeights w8 = w4;  // the same levels, declared 8-bit: the INT8 upload and kernels
  for (auto& L : w8.layers)
    for (mq::Linear* l : {&L.in_proj, &L.x_proj, &L.dt_proj, &L.out_proj}) l->quant->weight_bits = 8;
  CudaModelOptions o;
  o.max_tokens = 512, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 512;
  auto m4 = CudaMambaModel::Create(w4, o);
  auto m8 = CudaMambaModel::Create(w8, o);
  ASSERT_TRUE(m4.ok()) << m4.status().ToString();
  ASSERT_TRUE(m8.ok()) << m8.status().ToString();
  ASSERT_TRUE((*m4)->int4());
  ASSERT_FALSE((*m8)->int4());
  EXPECT_LT((*m4)->decode_weight_bytes(), (*m8)->decode_weight_bytes());
  // By default W4A8 decodes through its packed layer kernels up to 4 tokens, as INT8 does (the
  // crossover measured on the H100), and per stage above.
  for (int64_t B = 1; B <= kDecodeMaxBatch; ++B) {
    EXPECT_EQ((*m4)->DecodesWithLayerKernels(B), B <= 4) << "W4A8 B " << B;
    EXPECT_EQ((*m8)->DecodesWithLayerKernels(B), B <= 4) << "INT8 B " << B;
  }
  // Both told to decode B ≤ 8 through the layer kernels.
  (*m4)->SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
  (*m8)->SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
  for (int64_t B = 1; B <= kDecodeMaxBatch; ++B) {
    ASSERT_TRUE((*m4)->DecodesWithLayerKernels(B)) << "W4A8 B " << B;
    ASSERT_TRUE((*m8)->DecodesWithLayerKernels(B)) << "INT8 B " << B;
  }

  const int64_t Bmax = 8, L = 37, V = w4.config.vocab_size;
  std::vector<int32_t> ids(static_cast<size_t>(Bmax * L)), slots(static_cast<size_t>(Bmax));
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 131 + 5) % V);
  for (int64_t b = 0; b < Bmax; ++b) slots[b] = static_cast<int32_t>(b);
  auto logits = [&](CudaMambaModel& m, const std::vector<int32_t>& in, int64_t b, int64_t l) {
    std::vector<float> out;
    const std::vector<int32_t> sl(slots.begin(), slots.begin() + b);
    const Status s = m.Forward(in, sl, b, l, LogitsMode::kAll, &out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  };
  ASSERT_OK((*m4)->ResetSlots(slots));
  ASSERT_OK((*m8)->ResetSlots(slots));
  const std::vector<float> p4 = logits(**m4, ids, Bmax, L), p8 = logits(**m8, ids, Bmax, L);
  ASSERT_EQ(p4.size(), static_cast<size_t>(Bmax * L * V));
  ASSERT_EQ(p4.size(), p8.size());
  EXPECT_EQ(std::memcmp(p4.data(), p8.data(), p4.size() * 4), 0) << "prefill logits differ";
  // Single-token steps from the prefilled state, B = 1, 3, 8 (the first B slots; the others keep
  // their state): per stage (Forward: the int4 GEMV against the INT8 GEMV / cuBLASLt), then
  // through the layer kernels (the packed GEMV against the INT8 one). Each step reads the conv and
  // SSM state the previous one wrote, so the states must agree too.
  int step = 0;
  for (int64_t B : {1, 3, 8}) {
    for (int rep = 0; rep < 2; ++rep, ++step) {
      std::vector<int32_t> next(static_cast<size_t>(B));
      for (int64_t b = 0; b < B; ++b) next[b] = static_cast<int32_t>((7 + 13 * b + 29 * step) % V);
      const std::vector<float> s4 = logits(**m4, next, B, 1), s8 = logits(**m8, next, B, 1);
      ASSERT_EQ(s4.size(), static_cast<size_t>(B * V));
      ASSERT_EQ(std::memcmp(s4.data(), s8.data(), s4.size() * 4), 0) << "per-stage decode B " << B << " step " << step;
      const std::vector<int32_t> sl(slots.begin(), slots.begin() + B);
      const std::vector<float> d4 = DecodeLogits(**m4, next, sl), d8 = DecodeLogits(**m8, next, sl);
      ASSERT_EQ(std::memcmp(d4.data(), d8.data(), d4.size() * 4), 0) << "layer-kernel decode B " << B << " step " << step;
    }
  }
  GenerationOptions go;
  go.max_new_tokens = 12;
  const std::vector<std::vector<int32_t>> prompts = {{1, 2, 3, 4, 5}, {9, 8, 7, 6, 5}, {4, 4, 2, 2, 1}};
  auto g4 = (*m4)->Generate(prompts, go, true);
  auto g8 = (*m8)->Generate(prompts, go, true);
  ASSERT_TRUE(g4.ok() && g8.ok());
  EXPECT_EQ(*g4, *g8);
}

// Twin: the GEMV twins (the same kernels). A random W4A8 model of a real shape (the benchmark's)
// builds, holds exactly half the INT8 model's linear weight bytes and decodes (layer kernels at
// B = 1 and 8, graphs).
TEST(CudaInt4GpuTest, RandomW4A8ModelDecodes) {
  MQ_REQUIRE_GPU();
  auto config = ModelShapeConfig("130m");
  ASSERT_TRUE(config.ok());
  CudaModelOptions o;
  o.max_tokens = 64, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 8;
  RandomModelSpec s4;
  s4.config = *config, s4.int8 = true, s4.weight_bits = 4;
  RandomModelSpec s8 = s4;
  s8.weight_bits = 8;
  auto m4 = CudaMambaModel::CreateRandom(s4, o);
  auto m8 = CudaMambaModel::CreateRandom(s8, o);
  ASSERT_TRUE(m4.ok()) << m4.status().ToString();
  ASSERT_TRUE(m8.ok()) << m8.status().ToString();
  // The packed linears hold half the INT8 model's weight bytes (rows padded to 16), all else equal.
  const MambaConfig& c = *config;
  const int64_t d = c.hidden_size, E = c.intermediate_size, R = c.time_step_rank, N = c.state_size;
  const int64_t per_layer = 2 * E * hd::RoundUp(d, 16) + (R + 2 * N) * hd::RoundUp(E, 16) + E * hd::RoundUp(R, 16) +
                            d * hd::RoundUp(E, 16);
  EXPECT_EQ((*m8)->decode_weight_bytes() - (*m4)->decode_weight_bytes(), c.num_hidden_layers * per_layer / 2);
  for (int64_t B : {1, 8}) {
    ASSERT_OK((*m4)->PrepareDecode(B, true));
    ASSERT_OK((*m4)->DecodeStep(B, true));
  }
  ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
  RandomModelSpec bad = s4;
  bad.int8 = false;
  EXPECT_EQ(CudaMambaModel::CreateRandom(bad, o).status().code(), StatusCode::kInvalidArgument);
}

// Twin: CudaInt4TwinTest.PackedLayerKernelGemvEqualsTheInt8Products. Random W4A8 models of the
// 130m and 2.8b widths (2 layers; out_proj's k splits over warps at 2.8b): two decode steps through
// the packed layer kernels against the per-stage kernels (int4 GEMV) from the same prefilled
// state, B = 1, 3, 8: logits within the INT8 models' tolerance (cuda_gpu_test
// DecodeKernelsMatchPerStageOnRandomModels), greedy ids equal but for at most one row.
TEST(CudaInt4GpuTest, PackedLayerKernelsMatchPerStageOnRandomW4A8Models) {
  MQ_REQUIRE_GPU();
  for (int64_t d : {768, 2560}) {
    const RandomModelSpec spec = RandomFamilySpec(d, 2, 4, 9);
    CudaModelOptions o;
    o.max_tokens = 512, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 8;
    auto model = CudaMambaModel::CreateRandom(spec, o);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    CudaMambaModel& m = **model;
    const int64_t L = 16, V = spec.config.vocab_size;
    for (int64_t B : {1, 3, 8}) {
      std::vector<int32_t> ids(static_cast<size_t>(B * L)), slots(static_cast<size_t>(B)), next(static_cast<size_t>(B));
      for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(2 + (i * 7919) % (V - 2));
      for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b), next[b] = static_cast<int32_t>(100 + 13 * b);
      auto run = [&](DecodePath path, std::vector<float>* lg, std::vector<int32_t>* out_ids) {
        m.SetDecodePath(path, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
        ASSERT_EQ(m.DecodesWithLayerKernels(B), path == DecodePath::kLayerKernels);
        ASSERT_OK(m.ResetSlots(slots));
        ASSERT_OK(m.Forward(ids, slots, B, L, LogitsMode::kNone, nullptr));
        ASSERT_EQ(cudaMemcpy(m.decode_ids(), next.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(m.decode_slots(), slots.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
        ASSERT_OK(m.ResetDecodeCounters());
        ASSERT_OK(m.DecodeStep(B, false));
        ASSERT_OK(m.DecodeStep(B, false));
        ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
        lg->resize(static_cast<size_t>(B * V));
        ASSERT_EQ(cudaMemcpy(lg->data(), m.logits_dev(), lg->size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        out_ids->resize(static_cast<size_t>(B));
        ASSERT_EQ(cudaMemcpy(out_ids->data(), m.decode_ids(), B * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      };
      std::vector<float> ref, got;
      std::vector<int32_t> ref_ids, got_ids;
      run(DecodePath::kPerStage, &ref, &ref_ids);
      if (HasFatalFailure()) return;
      run(DecodePath::kLayerKernels, &got, &got_ids);
      if (HasFatalFailure()) return;
      const double err = RelError(got.data(), ref.data(), ref.size());
      std::printf("[gpu] random W4A8 %lldx2 decode, packed layer kernels vs per-stage kernels, B=%lld: logits rel "
                  "error %.3e\n",
                  static_cast<long long>(d), static_cast<long long>(B), err);
      EXPECT_LE(err, 5e-3) << "d " << d << " B " << B;
      int64_t same = 0;
      for (int64_t b = 0; b < B; ++b) same += got_ids[b] == ref_ids[b];
      EXPECT_GE(same, B - 1) << "d " << d << " B " << B << ": greedy ids differ in more than one row";
    }
  }
}

}  // namespace
}  // namespace mq::cuda
