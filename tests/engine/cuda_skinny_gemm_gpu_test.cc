// GPU tests of the skinny tensor-core GEMM (cuda/skinny_gemm_kernel.cu): the kernel against the
// CPU's exact int32 products and cuBLASLt for INT8 and packed int4 weights, and random INT8 / W4A8
// models whose per-stage linears run through it against the same models with it switched off
// (cuBLASLt, or unpack + cuBLASLt): bit-identical logits and tokens. Every test skips without a
// CUDA device; the CPU twin is tests/engine/cuda_skinny_gemm_twin_test.cc, which CI runs.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <vector>

#include "cuda/cublaslt_gemm.h"
#include "cuda/cuda_check.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/device_buffer.h"
#include "cuda/hd_math.h"
#include "cuda/skinny_gemm.h"
#include "cuda_test_util.h"
#include "model/int4_pack.h"
#include "model/linear.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

#define MQ_REQUIRE_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped (its CPU twin is cuda_skinny_gemm_twin_test)"

// Twin: CudaSkinnyGemmTwinTest.FragmentsPlanAndReductionEqualTheCpuProducts.
TEST(CudaSkinnyGemmGpuTest, EqualsTheCpuProductsAndCublasLt) {
  MQ_REQUIRE_GPU();
  auto gemm = CublasLtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status().ToString();
  // The family's linears (mamba-small, 130m, 2.8b) and odd sizes.
  const std::vector<std::pair<int64_t, int64_t>> shapes = {
      {1536, 384}, {56, 768},  {768, 24},    {384, 768},  {3072, 768},  {80, 1536},   {1536, 48},
      {768, 1536}, {7, 5},     {33, 37},     {130, 200},  {10240, 2560}, {192, 5120}, {5120, 160},
      {2560, 5120}};
  for (const bool w4 : {false, true}) {
    for (const auto& [out, k] : shapes) {
      const int64_t kp = hd::RoundUp(k, 16);
      std::vector<int8_t> w = testing::RandomInt8(static_cast<size_t>(out * kp), out * 17 + k);
      for (auto& v : w)
        if (w4) v = static_cast<int8_t>(v % 8);
      for (int64_t r = 0; r < out; ++r) std::fill(w.begin() + r * kp + k, w.begin() + (r + 1) * kp, 0);
      auto dw8 = Up(w);
      DeviceBuffer<uint8_t> dw4;
      if (w4) {
        auto packed = PackInt4Rows(w.data(), out, kp, kp / 2);
        ASSERT_TRUE(packed.ok());
        dw4 = Up(*packed);
      }
      for (int64_t tokens : {1, 3, 8, 9, 17, 33, 40, 64}) {
        std::vector<int8_t> x = testing::RandomInt8(static_cast<size_t>(tokens * kp), tokens * 5 + k);
        for (int64_t t = 0; t < tokens; ++t) std::fill(x.begin() + t * kp + k, x.begin() + (t + 1) * kp, 0);
        std::vector<int32_t> ref(static_cast<size_t>(tokens * out));
        Int8MatMulTransposedB(x.data(), w.data(), ref.data(), tokens, kp, out);
        auto dx = Up(x);
        // ldc > out: the columns past `out` must stay untouched.
        const int64_t ldc = out + 3;
        auto dacc = DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(tokens * ldc));
        ASSERT_TRUE(dacc.ok());
        for (const bool pdl : {false, true}) {
          ASSERT_EQ(cudaMemset(dacc->get(), 0x7f, dacc->bytes()), cudaSuccess);
          SkinnyGemmParams p;
          if (w4) {
            p.w4 = dw4.get();
          } else {
            p.w8 = dw8.get();
          }
          p.ldw = kp, p.x = dx.get(), p.ldx = kp, p.acc = dacc->get(), p.ldc = ldc;
          p.out = out, p.tokens = tokens, p.k = kp, p.pdl = pdl;
          ASSERT_TRUE(SkinnyGemmSupports(out, kp, tokens));
          ASSERT_OK(LaunchSkinnyGemm(p, nullptr));
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          const std::vector<int32_t> got = Down(*dacc);
          for (int64_t t = 0; t < tokens; ++t) {
            ASSERT_EQ(std::memcmp(&got[t * ldc], &ref[t * out], out * 4), 0)
                << (w4 ? "W4" : "INT8") << " out " << out << " k " << k << " tokens " << tokens << " row " << t;
            for (int64_t c = out; c < ldc; ++c) ASSERT_EQ(got[t * ldc + c], 0x7f7f7f7f) << "wrote past out";
          }
        }
        // cuBLASLt's INT8 GEMM on the same operands (out a multiple of 4 only).
        if (out % 4 == 0 && !w4) {
          auto dref = DeviceBuffer<int32_t>::Allocate(ref.size());
          ASSERT_TRUE(dref.ok());
          ASSERT_OK((*gemm)->Int8(dw8.get(), kp, dx.get(), kp, dref->get(), out, out, tokens, kp, nullptr));
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          ASSERT_EQ(Down(*dref), ref) << "cuBLASLt out " << out << " k " << k << " tokens " << tokens;
        }
      }
    }
  }
}

TEST(CudaSkinnyGemmGpuTest, RefusesWhatItCannotRun) {
  MQ_REQUIRE_GPU();
  auto w = DeviceBuffer<int8_t>::Allocate(64 * 64);
  auto x = DeviceBuffer<int8_t>::Allocate(128 * 64);
  auto acc = DeviceBuffer<int32_t>::Allocate(128 * 64);
  ASSERT_TRUE(w.ok() && x.ok() && acc.ok());
  SkinnyGemmParams p;
  p.w8 = w->get(), p.ldw = 64, p.x = x->get(), p.ldx = 64, p.acc = acc->get(), p.ldc = 64;
  p.out = 64, p.tokens = 65, p.k = 64;
  EXPECT_EQ(LaunchSkinnyGemm(p, nullptr).code(), StatusCode::kInvalidArgument);  // > 64 tokens
  EXPECT_FALSE(SkinnyGemmSupports(64, 64, 65));
  p.tokens = 8, p.k = 24;
  EXPECT_EQ(LaunchSkinnyGemm(p, nullptr).code(), StatusCode::kInvalidArgument);  // k not a multiple of 16
  p.k = 64, p.x = x->get() + 4;
  EXPECT_EQ(LaunchSkinnyGemm(p, nullptr).code(), StatusCode::kInvalidArgument);  // misaligned
  p.x = x->get(), p.w4 = reinterpret_cast<const uint8_t*>(w->get());
  EXPECT_EQ(LaunchSkinnyGemm(p, nullptr).code(), StatusCode::kInvalidArgument);  // both weight kinds
  EXPECT_FALSE(SkinnyGemmSupports(2560, 65536, 64));
}

// Twin: the kernel twin above and the model twins of cuda_twin_test. Random INT8 and W4A8 models
// of the 130m and 2.8b widths (2 layers): prefill of 33 tokens and decode steps at B = 8, 24, 64
// through the per-stage path (CUDA graphs), with the skinny GEMM and with it off — logits and
// greedy tokens bit for bit the same, since both produce the same int32 accumulators.
TEST(CudaSkinnyGemmGpuTest, ModelsDecodeBitIdenticallyWithAndWithoutIt) {
  MQ_REQUIRE_GPU();
  for (const int bits : {8, 4}) {
    for (int64_t d : {768, 2560}) {
      const RandomModelSpec spec = RandomFamilySpec(d, 2, bits, 11);
      CudaModelOptions o;
      o.max_tokens = 512, o.max_batch = 64, o.num_slots = 64, o.max_logit_rows = 64;
      auto model = CudaMambaModel::CreateRandom(spec, o);
      ASSERT_TRUE(model.ok()) << model.status().ToString();
      CudaMambaModel& m = **model;
      const int64_t V = spec.config.vocab_size;
      // Prefill of 3 × 11 = 33 tokens (the skinny GEMM's range), all logits.
      {
        std::vector<int32_t> ids(33), slots = {0, 1, 2};
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(2 + (i * 7919) % (V - 2));
        std::vector<float> on, off;
        m.SetSkinnyGemmMaxTokens(64, 64);
        ASSERT_OK(m.ResetSlots(slots));
        ASSERT_OK(m.Forward(ids, slots, 3, 11, LogitsMode::kAll, &on));
        m.SetSkinnyGemmMaxTokens(0, 0);
        ASSERT_OK(m.ResetSlots(slots));
        ASSERT_OK(m.Forward(ids, slots, 3, 11, LogitsMode::kAll, &off));
        ASSERT_EQ(on.size(), static_cast<size_t>(33 * V));
        ASSERT_EQ(std::memcmp(on.data(), off.data(), on.size() * 4), 0) << "prefill, bits " << bits << " d " << d;
      }
      for (int64_t B : {8, 24, 64}) {
        ASSERT_FALSE(m.DecodesWithLayerKernels(B));
        const int64_t L = 5;
        std::vector<int32_t> ids(static_cast<size_t>(B * L)), slots(static_cast<size_t>(B)), next(static_cast<size_t>(B));
        for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(2 + (i * 104729) % (V - 2));
        for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b), next[b] = static_cast<int32_t>(100 + 13 * b);
        auto run = [&](int64_t skinny, std::vector<float>* lg, std::vector<int32_t>* out_ids) {
          m.SetSkinnyGemmMaxTokens(skinny, skinny);  // drops the graphs
          ASSERT_OK(m.PrepareDecode(B, /*use_graph=*/true));  // an eager warm-up step, then the capture
          ASSERT_OK(m.ResetSlots(slots));
          ASSERT_OK(m.Forward(ids, slots, B, L, LogitsMode::kNone, nullptr));
          ASSERT_EQ(cudaMemcpy(m.decode_ids(), next.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
          ASSERT_EQ(cudaMemcpy(m.decode_slots(), slots.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
          ASSERT_OK(m.ResetDecodeCounters());
          for (int step = 0; step < 3; ++step) ASSERT_OK(m.DecodeStep(B, /*use_graph=*/true));
          ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
          lg->resize(static_cast<size_t>(B * V));
          ASSERT_EQ(cudaMemcpy(lg->data(), m.logits_dev(), lg->size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
          out_ids->resize(static_cast<size_t>(B));
          ASSERT_EQ(cudaMemcpy(out_ids->data(), m.decode_ids(), B * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        };
        std::vector<float> on, off;
        std::vector<int32_t> on_ids, off_ids;
        run(64, &on, &on_ids);
        if (HasFatalFailure()) return;
        run(0, &off, &off_ids);
        if (HasFatalFailure()) return;
        EXPECT_EQ(std::memcmp(on.data(), off.data(), on.size() * 4), 0) << "bits " << bits << " d " << d << " B " << B;
        EXPECT_EQ(on_ids, off_ids) << "bits " << bits << " d " << d << " B " << B;
        std::printf("[gpu] skinny GEMM, random %s %lldx2, decode B=%lld: logits %s the cuBLASLt path's\n",
                    bits == 4 ? "W4A8" : "INT8", static_cast<long long>(d), static_cast<long long>(B),
                    std::memcmp(on.data(), off.data(), on.size() * 4) == 0 ? "bit-identical to" : "DIFFER from");
      }
    }
  }
}

}  // namespace
}  // namespace mq::cuda
