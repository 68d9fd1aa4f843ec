// GPU tests of the CUDA backend: kernels against the CPU reference on fresh random inputs, and
// the whole model against the fixtures' transformers references and the CPU INT8 path. Every
// test skips (with a message) when no CUDA device is present; tests/engine/cuda_twin_test.cc
// checks the same arithmetic on the CPU in CI.
//
// Environment (set by tests/gpu/run.sh): MQ_FIXTURES_DIR holds mamba-small and its reference
// when ../shared/fixtures is absent; MQ_QUANT_SMALL_DIR is a quantized mamba-small directory
// (mq-engine quantize) for the perplexity comparison.
#include <dlfcn.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <set>
#include <vector>

#include "cpu/mamba_forward.h"
#include "cpu/selective_scan.h"
#include "cuda/cublaslt_gemm.h"
#include "cuda/cuda_check.h"
#include "cuda_test_util.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/cuda_perplexity.h"
#include "cuda/cuda_sequence_backend.h"
#include "serve/token_sampler.h"
#include "cuda/device_buffer.h"
#include "cuda/hd_math.h"
#include "cuda/kernel_params.h"
#include "eval/generation.h"
#include "eval/perplexity.h"
#include "eval/sampling.h"
#include "io/safetensors.h"
#include "model/linear.h"
#include "model/model_loader.h"
#include "quant/hadamard.h"
#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "serve/backend_plugin.h"
#include "test_paths.h"
#include "test_util.h"

namespace mq::cuda {
namespace {

using testing::RandomFloat;
using testing::RandomInt8;
using testing::RelError;
using testing::ToInt32;

#define MQ_REQUIRE_GPU() \
  if (!DeviceAvailable()) GTEST_SKIP() << "no CUDA device: GPU test skipped (its CPU twin is cuda_twin_test)"

TEST(CudaGpuTest, Int8GemmAndGemvAreExact) {
  MQ_REQUIRE_GPU();
  auto gemm = CublasLtGemm::Create();
  ASSERT_TRUE(gemm.ok()) << gemm.status().ToString();
  const std::vector<std::pair<int64_t, int64_t>> shapes = {{3072, 768}, {80, 1536}, {1536, 48}, {768, 1536},
                                                           {36, 128},   {128, 16},  {10240, 2560}};
  for (const auto& [out, k] : shapes) {
    for (int64_t tokens : {1, 2, 3, 8, 17, 64, 300}) {
      if (out * k > 4'000'000 && tokens > 64) continue;
      std::vector<int8_t> w = RandomInt8(static_cast<size_t>(out * k), out + 31 * k);
      std::vector<int8_t> x = RandomInt8(static_cast<size_t>(tokens * k), tokens + 7 * k);
      std::vector<int32_t> ref(static_cast<size_t>(tokens * out));
      Int8MatMulTransposedB(x.data(), w.data(), ref.data(), tokens, k, out);
      auto dw = Up(w), dx = Up(x);
      auto dacc = DeviceBuffer<int32_t>::Allocate(ref.size());
      ASSERT_TRUE(dacc.ok());
      // Poison, run the GEMV, check; poison, run cuBLASLt, check.
      ASSERT_EQ(cudaMemset(dacc->get(), 0x7f, dacc->bytes()), cudaSuccess);
      Int8GemvParams p;
      p.w = dw.get(), p.ldw = k, p.x = dx.get(), p.ldx = k, p.acc = dacc->get(), p.ldc = out;
      p.out = out, p.tokens = tokens, p.k = k;
      ASSERT_OK(LaunchInt8Gemv(p, nullptr));
      ASSERT_EQ(Down(*dacc), ref) << "GEMV out " << out << " k " << k << " tokens " << tokens;
      ASSERT_EQ(cudaMemset(dacc->get(), 0x7f, dacc->bytes()), cudaSuccess);
      ASSERT_OK((*gemm)->Int8(dw.get(), k, dx.get(), k, dacc->get(), out, out, tokens, k, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      ASSERT_EQ(Down(*dacc), ref) << "cuBLASLt out " << out << " k " << k << " tokens " << tokens;
    }
  }
}

// Few tokens run one cluster a token (row_cluster_plan.h), many one block a token: both must give
// the CPU's codes exactly.
TEST(CudaGpuTest, HadamardQuantMatchesCpu) {
  MQ_REQUIRE_GPU();
  for (int64_t T : {1, 4, 19, 64, 300})
  for (int64_t n : {128, 768, 1536, 2048, 2560, 5120}) {
    SCOPED_TRACE("tokens " + std::to_string(T));
    auto h = quant::RandomHadamard::Create(n, 99 + n);
    ASSERT_TRUE(h.ok());
    std::vector<float> x = RandomFloat(static_cast<size_t>(T * n), n, -2.0f, 2.0f);
    x[5] = 40.0f;  // an outlier channel, what the rotation is for
    std::vector<float> rot = x;
    h->ApplyRows(rot.data(), T);
    const int64_t ld = hd::RoundUp(n, 16) + 16;  // extra padding must be zero-filled
    std::vector<int8_t> ref(static_cast<size_t>(T * n));
    std::vector<float> ref_s(static_cast<size_t>(T));
    QuantizeRowsPerToken(rot.data(), T, n, ref.data(), ref_s.data());
    const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
    std::vector<float> scale(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) scale[i] = h->signs()[i] * inv;
    const int m = h->factors().m;
    std::vector<int8_t> mix(static_cast<size_t>(m * m), 1);
    if (m > 1) {
      auto small = quant::SmallHadamard(m);
      ASSERT_TRUE(small.ok());
      for (int o = 0; o < m; ++o)
        for (int i = 0; i < m; ++i) mix[o * m + i] = (*small)[i * m + o];
    }
    auto dx = Up(x), dscale = Up(scale);
    auto dmix = Up(mix);
    auto dq = Up(std::vector<int8_t>(static_cast<size_t>(T * ld), 55));
    auto ds = Up(std::vector<float>(static_cast<size_t>(T), -1.0f));
    HadamardQuantParams p;
    p.x = dx.get(), p.tokens = T, p.n = n, p.m = m, p.p = h->factors().pow2, p.scale = dscale.get(), p.mix = dmix.get();
    p.quant = QuantOut{dq.get(), ld, ds.get(), 0.0f};
    ASSERT_OK(LaunchHadamardQuant(p, nullptr));
    std::vector<int8_t> q = Down(dq);
    std::vector<float> s = Down(ds);
    int64_t mismatches = 0;
    for (int64_t t = 0; t < T; ++t) {
      EXPECT_EQ(s[t], ref_s[t]) << "n " << n << " token " << t;
      for (int64_t c = 0; c < ld; ++c) {
        const int8_t want = c < n ? ref[t * n + c] : 0;
        if (q[t * ld + c] != want) ++mismatches;
      }
    }
    EXPECT_EQ(mismatches, 0) << "n " << n;
  }
}

// The decode conv step with INT8 output (L = 1): few tokens split their channels over a cluster
// (row_cluster_plan.h) and exchange the token's |max|. u within float rounding of the CPU's conv;
// the codes and scales exactly those of quantizing the kernel's own u row (the whole row's scale,
// zero padding), the state shifted exactly.
TEST(CudaGpuTest, ConvStepQuantizesTheWholeRow) {
  MQ_REQUIRE_GPU();
  const int64_t K = 4, S = K - 1;
  for (int64_t E : {1536, 1800, 5120})  // 1800: the ranks' slices differ (448 / 452 channels)
    for (int64_t T : {1, 3, 64, 300}) {
      SCOPED_TRACE("E " + std::to_string(E) + " tokens " + std::to_string(T));
      const int64_t ld = E + 16;  // padding: must be zero-filled
      std::vector<float> x = RandomFloat(T * E, 31 + T, -2, 2), w = RandomFloat(E * K, 32), bias = RandomFloat(E, 33);
      x[T * E - 7] = 25.0f;  // the last rank's slice holds the last token's maximum
      std::vector<float> state = RandomFloat(T * E * S, 34, -3, 3);
      std::vector<int32_t> slots(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) slots[t] = static_cast<int32_t>(T - 1 - t);
      std::vector<float> u_ref(T * E), state_ref = state;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < E; ++c) {
          const float* st = state.data() + (slots[t] * E + c) * S;
          float acc = bias[c];
          for (int64_t k = 0; k < S; ++k) acc += w[c * K + k] * st[k];
          acc += w[c * K + S] * x[t * E + c];
          u_ref[t * E + c] = acc / (1.0f + std::exp(-acc));
          float* ns = state_ref.data() + (slots[t] * E + c) * S;
          for (int64_t k = 0; k + 1 < S; ++k) ns[k] = st[k + 1];
          ns[S - 1] = x[t * E + c];
        }
      auto dx = Up(x), dw = Up(w), db = Up(bias), dst = Up(state);
      auto dslots = Up(slots);
      auto du = Up(std::vector<float>(T * E, NAN));
      auto dq = Up(std::vector<int8_t>(T * ld, 99));
      auto ds = Up(std::vector<float>(T, -1.0f));
      CausalConvParams p;
      p.u0 = ActView{ActKind::kF32, dx.get(), E, nullptr, nullptr, nullptr};
      p.weight = dw.get(), p.bias = db.get(), p.conv_state = dst.get(), p.slot_stride = E * S;
      p.slot_ids = dslots.get(), p.batch = T, p.seqlen = 1, p.E = E, p.K = K;
      p.out_f32 = du.get(), p.quant = QuantOut{dq.get(), ld, ds.get(), 0.0f};
      ASSERT_OK(LaunchCausalConv(p, nullptr));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      const std::vector<float> u = Down(du);
      EXPECT_LT(RelError(u.data(), u_ref.data(), u.size()), 1e-5);
      EXPECT_EQ(Down(dst), state_ref);
      std::vector<int8_t> want(T * E);
      std::vector<float> want_s(T);
      QuantizeRowsPerToken(u.data(), T, E, want.data(), want_s.data());
      const std::vector<int8_t> q = Down(dq);
      EXPECT_EQ(Down(ds), want_s);
      int64_t bad = 0;
      for (int64_t t = 0; t < T; ++t)
        for (int64_t c = 0; c < ld; ++c) bad += q[t * ld + c] != (c < E ? want[t * E + c] : 0);
      EXPECT_EQ(bad, 0);
    }
}

// One block a row, wide for few rows (decode) and 256 threads for many; the half output too.
TEST(CudaGpuTest, ResidualNormQuantMatchesCpu) {
  MQ_REQUIRE_GPU();
  for (int64_t d : {768, 2560})
  for (int64_t T : {13, 64, 300}) {
  SCOPED_TRACE("d " + std::to_string(d) + " rows " + std::to_string(T));
  const int64_t dp = d + 16;  // padding: zero-filled
  std::vector<float> h = RandomFloat(T * d, 1, -3, 3), res = RandomFloat(T * d, 2), gamma = RandomFloat(d, 3, 0.5f, 1.5f);
  std::vector<float> hs(T * d), xn(T * d);
  for (int64_t i = 0; i < T * d; ++i) hs[i] = h[i] + res[i];
  for (int64_t t = 0; t < T; ++t) {
    double ss = 0;
    for (int64_t c = 0; c < d; ++c) ss += static_cast<double>(hs[t * d + c]) * hs[t * d + c];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / d + 1e-5));
    for (int64_t c = 0; c < d; ++c) xn[t * d + c] = gamma[c] * (hs[t * d + c] * inv);
  }
  std::vector<int8_t> ref(T * d);
  std::vector<float> ref_s(T);
  QuantizeRowsPerToken(xn.data(), T, d, ref.data(), ref_s.data());
  auto dh = Up(h), dres = Up(res), dg = Up(gamma);
  auto dq = Up(std::vector<int8_t>(T * dp, 3));
  auto ds = Up(std::vector<float>(T, 0.0f));
  ResidualNormParams p;
  p.h = dh.get(), p.residual = ActView{ActKind::kF32, dres.get(), d, nullptr, nullptr, nullptr};
  p.gamma = dg.get(), p.eps = 1e-5f, p.rows = T, p.d = d, p.quant = QuantOut{dq.get(), dp, ds.get(), 0.0f};
  ASSERT_OK(LaunchResidualNorm(p, nullptr));
  EXPECT_EQ(Down(dh), hs);
  std::vector<int8_t> q = Down(dq);
  int64_t off_by_one = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < dp; ++c) {
      const int8_t want = c < d ? ref[t * d + c] : 0;
      ASSERT_LE(std::abs(q[t * dp + c] - want), 1) << t << " " << c;
      off_by_one += q[t * dp + c] != want;
    }
  EXPECT_LE(off_by_one, 2) << "INT8 codes differing from the CPU's (double-sum order only)";
  std::vector<float> s = Down(ds);
  for (int64_t t = 0; t < T; ++t) EXPECT_NEAR(s[t], ref_s[t], 1e-6f * ref_s[t]);
  // The half output (FP16 models), no residual: h as it now is, rows padded with zeros.
  auto dh16 = Up(std::vector<__half>(T * dp, __float2half_rn(7.0f)));
  ResidualNormParams f;
  f.h = dh.get(), f.gamma = dg.get(), f.eps = 1e-5f, f.rows = T, f.d = d, f.out_f16 = dh16.get(), f.ld_out = dp;
  ASSERT_OK(LaunchResidualNorm(f, nullptr));
  const std::vector<__half> o = Down(dh16);
  double worst = 0;
  for (int64_t t = 0; t < T; ++t)
    for (int64_t c = 0; c < dp; ++c) {
      const float got = __half2float(o[t * dp + c]);
      if (c >= d) {
        ASSERT_EQ(got, 0.0f);
      } else {
        worst = std::max(worst, std::fabs(static_cast<double>(got) - xn[t * d + c]) / (std::fabs(xn[t * d + c]) + 1e-3));
      }
    }
  EXPECT_LT(worst, 1e-3);
  }
}

// The INT8-path scan (accumulator views for Δ and z) against the CPU scan + gate, prefill from a
// non-zero state then decode steps, in non-trivial slots.
TEST(CudaGpuTest, SelectiveScanMatchesCpu) {
  MQ_REQUIRE_GPU();
  const int64_t B = 3, L = 70, E = 200, N = 16, R = 8, ld = R + 2 * N;
  const float log2e = 1.4426950408889634f;
  std::mt19937_64 g(5);
  std::vector<int32_t> dacc(B * L * E), zacc(B * L * E);
  for (auto& v : dacc) v = static_cast<int32_t>(g() % 20001) - 15000;
  for (auto& v : zacc) v = static_cast<int32_t>(g() % 20001) - 10000;
  std::vector<float> sx = RandomFloat(B * L, 6, 1e-4f, 3e-4f), sw = RandomFloat(2 * E, 7, 0.5f, 1.5f);
  std::vector<float> dtb = RandomFloat(E, 8, -3, -1), u = RandomFloat(B * L * E, 9), dbc = RandomFloat(B * L * ld, 10);
  std::vector<float> A = RandomFloat(E * N, 11, -6, -0.5f), D = RandomFloat(E, 12), gs = RandomFloat(E, 13, 0.5f, 2);
  std::vector<float> h0 = RandomFloat(B * E * N, 14);
  // CPU reference.
  std::vector<float> delta(B * L * E), y_ref(B * L * E), h_ref = h0;
  for (int64_t t = 0; t < B * L; ++t)
    for (int64_t c = 0; c < E; ++c)
      delta[t * E + c] = hd::Softplus(hd::Dequantize(dacc[t * E + c], sx[t], sw[c]) + dtb[c]);
  cpu::SelectiveScanParams cp;
  cp.batch = B, cp.seqlen = L, cp.channels = E, cp.state = N, cp.u = u.data(), cp.delta = delta.data(), cp.A = A.data();
  cp.B = dbc.data() + R, cp.C = dbc.data() + R + N, cp.bc_stride = ld, cp.D = D.data(), cp.h = h_ref.data(), cp.y = y_ref.data();
  cpu::SelectiveScan(cp);
  for (int64_t t = 0; t < B * L; ++t)
    for (int64_t c = 0; c < E; ++c)
      y_ref[t * E + c] *= hd::SmoothSilu(hd::Dequantize(zacc[t * E + c], sx[t], sw[E + c]), gs[c]);
  // GPU: state slots 2, 0, 1 of 4 (slot stride E·N).
  const std::vector<int32_t> slots = {2, 0, 1};
  std::vector<float> pool(4 * E * N, 0.0f);
  for (int64_t b = 0; b < B; ++b) std::copy_n(h0.begin() + b * E * N, E * N, pool.begin() + slots[b] * E * N);
  std::vector<float> a2(E * N);
  for (int64_t i = 0; i < E * N; ++i) a2[i] = A[i] * log2e;
  auto d_dacc = Up(dacc), d_zacc = Up(zacc);
  auto d_sx = Up(sx), d_sw = Up(sw), d_dtb = Up(dtb), d_u = Up(u), d_dbc = Up(dbc), d_a2 = Up(a2), d_D = Up(D), d_gs = Up(gs);
  auto d_pool = Up(pool);
  auto d_slots = Up(slots);
  auto d_y = Up(std::vector<float>(B * L * E, NAN));
  SelectiveScanParams p;
  p.batch = B, p.seqlen = L, p.E = E, p.N = N;
  p.delta = ActView{ActKind::kInt32Acc, d_dacc.get(), E, d_sx.get(), d_sw.get(), d_dtb.get()};
  p.z = ActView{ActKind::kInt32Acc, d_zacc.get(), E, d_sx.get(), d_sw.get() + E, nullptr};
  p.u = d_u.get(), p.u_f32 = true, p.dbc = d_dbc.get(), p.dbc_ld = ld, p.R = R;
  p.A2 = d_a2.get(), p.D = d_D.get(), p.gate_scale = d_gs.get(), p.ssm_state = d_pool.get(), p.slot_stride = E * N;
  p.slot_ids = d_slots.get(), p.y_f32 = d_y.get();
  ASSERT_OK(LaunchSelectiveScan(p, nullptr));
  std::vector<float> y = Down(d_y), hp = Down(d_pool);
  EXPECT_LT(RelError(y.data(), y_ref.data(), y.size()), 1e-4);
  std::vector<float> h_gpu(B * E * N);
  for (int64_t b = 0; b < B; ++b) std::copy_n(hp.begin() + slots[b] * E * N, E * N, h_gpu.begin() + b * E * N);
  EXPECT_LT(RelError(h_gpu.data(), h_ref.data(), h_gpu.size()), 1e-4);
  for (float v : std::vector<float>(hp.begin() + 3 * E * N, hp.end())) ASSERT_EQ(v, 0.0f) << "untouched slot written";
}

// ---- model-level tests --------------------------------------------------------------------------

CudaModelOptions FixtureOptions() {
  CudaModelOptions o;
  o.max_tokens = 16 * 256;
  o.max_batch = 16;
  o.num_slots = 16;
  o.max_logit_rows = 16 * 256;
  return o;
}

// The decode loop's next-token kernel against the CPU reference SampleToken on the same logits:
// greedy and sampled (temperature, top-k, top-p), rows = sequences, ten steps each. Weights use
// expf on both sides, whose last bits may differ: at most one draw in the whole test may land on
// the other side of a boundary.
TEST(CudaGpuTest, NextTokenSelectionMatchesCpuSampling) {
  MQ_REQUIRE_GPU();
  const int64_t B = 4, V = 50280, kSteps = 10;
  std::mt19937 g(21);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> logits(static_cast<size_t>(B * V));
  for (auto& x : logits) x = nd(g);
  DeviceBuffer<float> d_logits = Up(logits);
  auto d_next = DeviceBuffer<int32_t>::Allocate(B);
  auto d_finished = DeviceBuffer<int32_t>::Allocate(B);
  auto d_out = DeviceBuffer<int32_t>::Allocate(kSteps * B);
  auto d_step = DeviceBuffer<int32_t>::Allocate(2);
  ASSERT_TRUE(d_next.ok() && d_finished.ok() && d_out.ok() && d_step.ok());
  int equal = 0, total = 0;
  for (const SamplingOptions& o : {SamplingOptions{}, SamplingOptions{1.0f, 0, 1.0f, 1}, SamplingOptions{0.8f, 50, 1.0f, 2},
                                   SamplingOptions{1.2f, 0, 0.9f, 3}, SamplingOptions{0.9f, 100, 0.8f, 4}}) {
    ASSERT_OK(d_finished->Zero(nullptr));
    ASSERT_OK(d_step->Zero(nullptr));
    GreedyParams p;
    p.logits = d_logits.get(), p.batch = B, p.V = V, p.next_ids = d_next->get(), p.finished = d_finished->get();
    p.out = d_out->get(), p.step = d_step->get(), p.max_steps = kSteps, p.eos_id = -1, p.pad_id = 1;
    p.sampling = o;
    for (int64_t s = 0; s < kSteps; ++s) ASSERT_OK(LaunchGreedy(p, nullptr));
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const std::vector<int32_t> out = Down(*d_out);
    for (int64_t s = 0; s < kSteps; ++s)
      for (int64_t b = 0; b < B; ++b) {
        const int32_t want = SampleToken(logits.data() + b * V, V, o, static_cast<uint64_t>(b), static_cast<uint64_t>(s));
        equal += out[s * B + b] == want;
        ++total;
      }
  }
  std::printf("[gpu] next-token selection (greedy and sampled) equal to the CPU reference: %d/%d\n", equal, total);
  EXPECT_GE(equal, total - 1);
}

// One decode step (B ≤ 8) through each decode path, from the same state after a 16-token prefill,
// against the per-stage kernels (the prefill path with T = B): logits within max_rel_err.
void ExpectDecodePathsAgree(CudaMambaModel& model, const std::string& what, double max_rel_err) {
  const int64_t L = 16, V = model.config().vocab_size;
  std::vector<std::pair<DecodePath, std::string>> paths = {{DecodePath::kLayerKernels, "layer kernels"}};
  for (int64_t B : {1, 3, 8}) {
    std::vector<int32_t> ids(static_cast<size_t>(B * L)), slots(static_cast<size_t>(B)), next(static_cast<size_t>(B));
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>(2 + (i * 7919) % (V - 2));
    for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b), next[b] = static_cast<int32_t>(100 + 13 * b);
    auto step = [&](DecodePath path, bool pdl, std::vector<float>* lg, std::vector<float>* state) {
      model.SetDecodePath(path, pdl, /*l2_prefetch=*/false, kDecodeMaxBatch);
      ASSERT_OK(model.ResetSlots(slots));
      ASSERT_OK(model.Forward(ids, slots, B, L, LogitsMode::kNone, nullptr));
      ASSERT_EQ(cudaMemcpy(model.decode_ids(), next.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(model.decode_slots(), slots.data(), B * 4, cudaMemcpyHostToDevice), cudaSuccess);
      ASSERT_OK(model.ResetDecodeCounters());
      // Two steps: the second reads the conv and SSM state the first one wrote.
      ASSERT_OK(model.DecodeStep(B, false));
      ASSERT_OK(model.DecodeStep(B, false));
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      lg->resize(static_cast<size_t>(B * V));
      ASSERT_EQ(cudaMemcpy(lg->data(), model.logits_dev(), lg->size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      // The next ids the greedy kernel wrote back are part of the result too.
      std::vector<int32_t> ids_after(static_cast<size_t>(B));
      ASSERT_EQ(cudaMemcpy(ids_after.data(), model.decode_ids(), B * 4, cudaMemcpyDeviceToHost), cudaSuccess);
      state->assign(ids_after.begin(), ids_after.end());
    };
    std::vector<float> ref, ref_ids;
    step(DecodePath::kPerStage, false, &ref, &ref_ids);
    if (::testing::Test::HasFatalFailure()) return;
    for (const auto& [path, name] : paths) {
      for (bool pdl : {true, false}) {
        std::vector<float> got, got_ids;
        step(path, pdl, &got, &got_ids);
        if (::testing::Test::HasFatalFailure()) return;
        const double err = RelError(got.data(), ref.data(), ref.size());
        std::printf("[gpu] %s decode, %s%s vs per-stage kernels, B=%lld: logits rel error %.3e\n", what.c_str(),
                    name.c_str(), path == DecodePath::kLayerKernels ? (pdl ? " (PDL)" : " (no PDL)") : "",
                    static_cast<long long>(B), err);
        EXPECT_LE(err, max_rel_err) << what << " " << name << " B " << B;
        int64_t same = 0;
        for (int64_t b = 0; b < B; ++b) same += got_ids[b] == ref_ids[b];
        EXPECT_GE(same, B - 1) << what << " " << name << ": greedy ids differ in more than one row";
      }
    }
    // The L2 look-ahead only prefetches weights: both paths' logits and next ids are the same bits.
    for (DecodePath path : {DecodePath::kLayerKernels, DecodePath::kPerStage}) {
      std::vector<float> off, off_ids, on, on_ids;
      model.SetDecodeL2AheadMb(0);
      step(path, true, &off, &off_ids);
      model.SetDecodeL2AheadMb(64);
      step(path, true, &on, &on_ids);
      model.SetDecodeL2AheadMb(-1);
      if (::testing::Test::HasFatalFailure()) return;
      EXPECT_EQ(on, off) << what << " B " << B << ": L2 look-ahead changed the logits";
      EXPECT_EQ(on_ids, off_ids) << what << " B " << B;
    }
  }
  model.SetDecodePath(DecodePath::kLayerKernels);
}

// Random models whose R2 Hadamard takes each path of the decode Hadamard kernel: d_inner 1280 =
// 20·64 (the 20-point factor of 2.8b; warp butterflies over 64-value chunks), 1536 = 12·128 (130m's
// factors), 1024 = 2^10 (one chunk larger than a warp holds: the shared-memory levels, like 370m
// and 1.4b); FP16 at 1280. Enough rows that the decode GEMVs split k over warps.
TEST(CudaGpuTest, DecodeKernelsMatchPerStageOnRandomModels) {
  MQ_REQUIRE_GPU();
  struct Case { bool int8; int64_t d; };
  for (const Case& c : {Case{false, 640}, Case{true, 640}, Case{true, 768}, Case{true, 512}}) {
    const RandomModelSpec spec = RandomFamilySpec(c.d, 3, c.int8 ? 8 : 16, 5);
    CudaModelOptions o;
    o.max_tokens = 512, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 8;
    auto model = CudaMambaModel::CreateRandom(spec, o);
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    ExpectDecodePathsAgree(**model, std::string(c.int8 ? "random INT8 " : "random FP16 ") + std::to_string(c.d) + "x3",
                           5e-3);
  }
}

class CudaFixtureTest : public ::testing::TestWithParam<std::string> {};

TEST_P(CudaFixtureTest, Fp16LogitsAndGreedyIdsMatchTransformers) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture(GetParam());
  MQ_REQUIRE_FIXTURE(paths, GetParam());
  auto weights = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  auto model = CudaMambaModel::Create(*weights, FixtureOptions());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_FALSE((*model)->int8());
  auto ref = SafetensorsFile::Open(paths.reference);
  ASSERT_TRUE(ref.ok());
  const TensorView* ids_view = (*ref)->Find("input_ids");
  const int64_t B = ids_view->shape[0], L = ids_view->shape[1];
  std::vector<int32_t> ids = ToInt32(*ids_view);
  std::vector<int32_t> slots(B);
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
  ASSERT_OK((*model)->ResetSlots(slots));
  std::vector<float> logits;
  ASSERT_OK((*model)->Forward(ids, slots, B, L, LogitsMode::kAll, &logits));
  std::vector<float> ref_logits = ToFloat32(*(*ref)->Find("logits"));
  ASSERT_EQ(logits.size(), ref_logits.size());
  const double err = RelError(logits.data(), ref_logits.data(), logits.size());
  std::printf("[gpu] %s FP16 logits rel error %.3e\n", GetParam().c_str(), err);
  RecordProperty("fp16_logits_rel_error", std::to_string(err));
  EXPECT_LE(err, 1e-2);

  // Prefill in two pieces (state carried across calls) gives the same last logits.
  ASSERT_OK((*model)->ResetSlots(slots));
  std::vector<int32_t> first, second;
  for (int64_t b = 0; b < B; ++b) {
    first.insert(first.end(), ids.begin() + b * L, ids.begin() + b * L + L / 2);
    second.insert(second.end(), ids.begin() + b * L + L / 2, ids.begin() + (b + 1) * L);
  }
  std::vector<float> last;
  ASSERT_OK((*model)->Forward(first, slots, B, L / 2, LogitsMode::kNone, nullptr));
  ASSERT_OK((*model)->Forward(second, slots, B, L - L / 2, LogitsMode::kLast, &last));
  const int64_t V = weights->V();
  for (int64_t b = 0; b < B; ++b)
    EXPECT_LE(RelError(last.data() + b * V, ref_logits.data() + ((b + 1) * L - 1) * V, V), 1e-2) << "row " << b;

  const TensorView* prompt_view = (*ref)->Find("generate_prompt_ids");
  const TensorView* greedy_view = (*ref)->Find("generate_greedy_ids");
  std::vector<int32_t> prompt_flat = ToInt32(*prompt_view), greedy_flat = ToInt32(*greedy_view);
  const int64_t P = prompt_view->shape[0], PL = prompt_view->shape[1], GL = greedy_view->shape[1];
  std::vector<std::vector<int32_t>> prompts(P);
  for (int64_t b = 0; b < P; ++b) prompts[b].assign(prompt_flat.begin() + b * PL, prompt_flat.begin() + (b + 1) * PL);
  GenerationOptions go;
  go.max_new_tokens = 32, go.eos_id = 0, go.pad_id = 1;
  for (bool graph : {true, false}) {
    auto out = (*model)->Generate(prompts, go, graph);
    ASSERT_TRUE(out.ok()) << out.status().ToString();
    for (int64_t b = 0; b < P; ++b) {
      std::vector<int32_t> want(greedy_flat.begin() + b * GL, greedy_flat.begin() + (b + 1) * GL);
      EXPECT_EQ((*out)[b], want) << "prompt " << b << (graph ? " (graph)" : " (eager)");
    }
  }
}

TEST_P(CudaFixtureTest, Fp16DecodePathsAgree) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture(GetParam());
  MQ_REQUIRE_FIXTURE(paths, GetParam());
  auto weights = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(weights.ok()) << weights.status().ToString();
  // Decode-sized options: the layer kernels need B ≤ max_logit_rows only.
  CudaModelOptions o;
  o.max_tokens = 256, o.max_batch = 8, o.num_slots = 8, o.max_logit_rows = 8;
  auto model = CudaMambaModel::Create(*weights, o);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ExpectDecodePathsAgree(**model, "mamba-" + GetParam() + " FP16", 5e-3);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, CudaFixtureTest, ::testing::Values("tiny", "small"));

// INT8: the quantized model (MQ_QUANT_SMALL_DIR, from `mq-engine quantize`) against the CPU INT8
// path on the same directory: logits on the reference windows, greedy ids, perplexity on eval.txt.
TEST(CudaQuantizedTest, Int8MatchesCpuInt8Path) {
  MQ_REQUIRE_GPU();
  const char* dir = std::getenv("MQ_QUANT_SMALL_DIR");
  if (dir == nullptr || !testing::Exists(dir))
    GTEST_SKIP() << "MQ_QUANT_SMALL_DIR not set: run tests/gpu/run.sh (it quantizes mamba-small first)";
  auto loaded = LoadModel(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
  ASSERT_TRUE(loaded->quantized);
  const MambaWeights& w = loaded->weights;
  auto model = CudaMambaModel::Create(w, FixtureOptions());
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  ASSERT_TRUE((*model)->int8());

  // Logits on the small fixture's reference windows vs the CPU INT8 forward.
  auto paths = testing::Fixture("small");
  if (!paths.model_dir.empty()) {
    auto ref = SafetensorsFile::Open(paths.reference);
    ASSERT_TRUE(ref.ok());
    const TensorView* ids_view = (*ref)->Find("input_ids");
    const int64_t B = ids_view->shape[0], L = ids_view->shape[1];
    std::vector<int32_t> ids = ToInt32(*ids_view), slots(B);
    for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
    cpu::MambaState state = cpu::MambaState::Zeros(w.config, B);
    std::vector<float> cpu_logits, gpu_logits;
    ASSERT_OK(cpu::MambaForward(w, ids.data(), B, L, &state, &cpu_logits));
    ASSERT_OK((*model)->ResetSlots(slots));
    ASSERT_OK((*model)->Forward(ids, slots, B, L, LogitsMode::kAll, &gpu_logits));
    const double err = RelError(gpu_logits.data(), cpu_logits.data(), cpu_logits.size());
    std::printf("[gpu] INT8 logits vs CPU INT8 rel error %.3e\n", err);
    EXPECT_LE(err, 2e-2);
    const TensorView* prompt_view = (*ref)->Find("generate_prompt_ids");
    std::vector<int32_t> prompt_flat = ToInt32(*prompt_view);
    const int64_t P = prompt_view->shape[0], PL = prompt_view->shape[1];
    std::vector<std::vector<int32_t>> prompts(P);
    for (int64_t b = 0; b < P; ++b) prompts[b].assign(prompt_flat.begin() + b * PL, prompt_flat.begin() + (b + 1) * PL);
    GenerationOptions go;
    auto cpu_ids = Generate(w, prompts, go);
    auto gpu_ids = (*model)->Generate(prompts, go, true);
    ASSERT_TRUE(cpu_ids.ok() && gpu_ids.ok());
    int64_t same = 0, total = 0;
    for (int64_t b = 0; b < P; ++b)
      for (size_t i = 0; i < std::min((*cpu_ids)[b].size(), (*gpu_ids)[b].size()); ++i)
        same += (*cpu_ids)[b][i] == (*gpu_ids)[b][i], ++total;
    std::printf("[gpu] INT8 greedy ids equal to CPU INT8: %lld/%lld\n", static_cast<long long>(same),
                static_cast<long long>(total));
  }

  // Every decode path against the per-stage kernels, from the same state.
  ExpectDecodePathsAgree(**model, "mq-quant-small", 5e-3);

  const std::vector<int32_t> tokens = testing::EvalTextTokens(dir, static_cast<int32_t>(w.config.eos_token_id));
  ASSERT_FALSE(tokens.empty());
  auto gpu = EvaluatePerplexityCuda(**model, tokens, 256, 16);
  ASSERT_TRUE(gpu.ok()) << gpu.status().ToString();
  auto cpu_ppl = EvaluatePerplexity(w, tokens, 256);
  ASSERT_TRUE(cpu_ppl.ok());
  const double rel = std::fabs(gpu->perplexity - cpu_ppl->perplexity) / cpu_ppl->perplexity;
  std::printf("[gpu] mamba-small INT8 perplexity: GPU %.4f CPU %.4f (rel diff %.4f%%, %lld predictions)\n",
              gpu->perplexity, cpu_ppl->perplexity, 100 * rel, static_cast<long long>(gpu->tokens_scored));
  RecordProperty("ppl_gpu", std::to_string(gpu->perplexity));
  RecordProperty("ppl_cpu", std::to_string(cpu_ppl->perplexity));
  EXPECT_EQ(gpu->tokens_scored, cpu_ppl->tokens_scored);
  EXPECT_LE(rel, 3e-3);
}


// Scope `full` models (quantized on the CPU): fake-quantized conv input, INT8 h·C per (step,
// channel), online R4 — GPU logits, greedy continuations (decode through the per-stage kernels)
// and perplexity against the CPU INT8 forward; per-step state scales are refused.
TEST(CudaQuantizedTest, ScopeFullMatchesCpu) {
  MQ_REQUIRE_GPU();
  for (const std::string name : {"tiny", "small"}) {
    auto paths = testing::Fixture(name);
    if (paths.model_dir.empty()) {
      std::printf("[gpu] scope full: fixture mamba-%s absent, skipped\n", name.c_str());
      continue;
    }
    quant::QuantizeOptions o;
    o.model_dir = paths.model_dir;
    o.calib_text_path = testing::RepoPath("models/text/calib.txt");
    o.num_samples = 8;
    o.seq_len = 128;
    o.scope = "full";
    auto build = quant::BuildQuantizedModel(o, nullptr);
    ASSERT_TRUE(build.ok()) << build.status().ToString();
    const MambaWeights& w = build->model;
    ASSERT_TRUE(w.layers[0].quantize_output_product && w.layers[0].quantize_conv_input);
    auto model = CudaMambaModel::Create(w, FixtureOptions());
    ASSERT_TRUE(model.ok()) << model.status().ToString();

    const int64_t B = 2, L = 40;
    std::vector<int32_t> ids(B * L), slots = {0, 1};
    std::mt19937_64 g(3);
    for (int32_t& t : ids) t = static_cast<int32_t>(g() % static_cast<uint64_t>(w.V()));
    cpu::MambaState state = cpu::MambaState::Zeros(w.config, B);
    std::vector<float> cpu_logits, gpu_logits;
    ASSERT_OK(cpu::MambaForward(w, ids.data(), B, L, &state, &cpu_logits));
    ASSERT_OK((*model)->ResetSlots(slots));
    ASSERT_OK((*model)->Forward(ids, slots, B, L, LogitsMode::kAll, &gpu_logits));
    const double err = RelError(gpu_logits.data(), cpu_logits.data(), cpu_logits.size());
    std::printf("[gpu] mamba-%s scope full INT8 logits vs CPU rel error %.3e\n", name.c_str(), err);
    EXPECT_LE(err, 2e-2);

    std::vector<std::vector<int32_t>> prompts = {{ids.begin(), ids.begin() + 8}, {ids.begin() + L, ids.begin() + L + 8}};
    GenerationOptions go;
    go.max_new_tokens = 16;
    auto cpu_ids = Generate(w, prompts, go);
    auto gpu_ids = (*model)->Generate(prompts, go, true);
    ASSERT_TRUE(cpu_ids.ok() && gpu_ids.ok()) << gpu_ids.status().ToString();
    int64_t same = 0, total = 0;
    for (size_t b = 0; b < prompts.size(); ++b)
      for (size_t i = 8; i < std::min((*cpu_ids)[b].size(), (*gpu_ids)[b].size()); ++i)
        same += (*cpu_ids)[b][i] == (*gpu_ids)[b][i], ++total;
    std::printf("[gpu] mamba-%s scope full greedy ids equal to CPU: %lld/%lld\n", name.c_str(),
                static_cast<long long>(same), static_cast<long long>(total));
    EXPECT_EQ((*cpu_ids)[0][8], (*gpu_ids)[0][8]) << "first generated token";

    // Perplexity on the start of eval.txt (the CPU's time-outer scan is slow at full length).
    std::vector<int32_t> tokens = testing::EvalTextTokens(paths.model_dir, static_cast<int32_t>(w.config.eos_token_id));
    ASSERT_FALSE(tokens.empty());
    tokens.resize(std::min<size_t>(tokens.size(), 24 * 256 + 1));
    auto gpu_ppl = EvaluatePerplexityCuda(**model, tokens, 256, 16);
    auto cpu_ppl = EvaluatePerplexity(w, tokens, 256);
    ASSERT_TRUE(gpu_ppl.ok() && cpu_ppl.ok());
    const double rel = std::fabs(gpu_ppl->perplexity - cpu_ppl->perplexity) / cpu_ppl->perplexity;
    std::printf("[gpu] mamba-%s scope full perplexity: GPU %.4f CPU %.4f (rel diff %.4f%%, %lld predictions)\n",
                name.c_str(), gpu_ppl->perplexity, cpu_ppl->perplexity, 100 * rel,
                static_cast<long long>(gpu_ppl->tokens_scored));
    EXPECT_LE(rel, 3e-3);

    // One h scale per whole step would need a grid-wide reduction every step: refused.
    o.state_granularity = "per_step";
    auto per_step = quant::BuildQuantizedModel(o, nullptr);
    ASSERT_TRUE(per_step.ok());
    EXPECT_EQ(CudaMambaModel::Create(per_step->model, FixtureOptions()).status().code(), StatusCode::kUnimplemented);
  }
}

// ---- the serving backend (CudaSequenceBackend, and the same through libmq_cuda_backend.so) ----

serve::SequenceBackendOptions SequenceTestOptions() {
  serve::SequenceBackendOptions o;
  o.num_slots = 8;  // scratch slot 8
  o.max_batch = 8;  // buckets 1, 2, 4, 8
  o.max_prefill_tokens = 64;
  o.max_logit_rows = 64;
  return o;
}

int32_t ArgmaxRow(const float* x, int64_t n) { return static_cast<int32_t>(std::max_element(x, x + n) - x); }

// Whether the GPU's greedy choice `got` is the CPU's `want` or ties with it within `rel` of the
// row's largest |logit| (FP16 vs float32 may order a near tie either way).
bool SameOrNearTie(const float* cpu_row, int64_t V, int32_t got, int32_t want, double rel) {
  if (got == want) return true;
  float scale = 0;
  for (int64_t v = 0; v < V; ++v) scale = std::max(scale, std::fabs(cpu_row[v]));
  return cpu_row[want] - cpu_row[got] <= rel * scale;
}

// Five sequences in scattered slots (5, 0, 3, 7, 2) of a dirtied pool: prefill (one with every
// position's logits, one in two chunks), then 32 + 3·i greedy decode steps for sequence i in
// changing batches (1..6 rows: buckets 1, 2, 4, 8, padding rows on the scratch slot; a sequence
// sits out some steps), and a CopySlot fork (slot 6) at step 12. Everything against the CPU reference forward run
// one sequence at a time from its own state, fed the CPU's greedy tokens (teacher forcing):
// logits within `tol` over all rows (the GPU tests' FP16-vs-float32 or INT8-vs-CPU-INT8 bound)
// and within 2·tol for every single row; greedy ids equal, except near ties (within 1% of the
// row's largest |logit|), which may go either way in at most 5% of the choices.
void ExpectSequenceBackendMatchesCpu(serve::SequenceBackend& gpu, const MambaWeights& w, const std::string& what,
                                     double tol) {
  const int64_t V = w.V(), kSteps = 32;
  const serve::SequenceBackendOptions& o = gpu.options();
  ASSERT_EQ(o.num_slots, 8);
  ASSERT_EQ(o.max_batch, 8);
  ASSERT_EQ(gpu.device(), "cuda");
  std::mt19937_64 g(11);
  auto random_ids = [&](int64_t n) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (auto& t : ids) t = static_cast<int32_t>(g() % static_cast<uint64_t>(V));
    return ids;
  };
  // Dirty every slot so that ResetSlot has something to clear.
  for (int32_t s = 0; s < o.num_slots; ++s) {
    const std::vector<int32_t> junk = random_ids(9);
    ASSERT_OK(gpu.Prefill(s, junk.data(), 9, nullptr, nullptr));
  }
  // Argument checks: the scratch slot is never a sequence's; batches are distinct and bounded.
  {
    const std::vector<int32_t> one = {1}, two = {1, 1};
    std::vector<float> lg(static_cast<size_t>(9 * V));
    EXPECT_EQ(gpu.Prefill(o.num_slots, one.data(), 1, lg.data(), nullptr).code(), StatusCode::kInvalidArgument);
    const std::vector<int32_t> scratch = {o.num_slots};
    EXPECT_EQ(gpu.Decode(scratch.data(), one.data(), 1, lg.data()).code(), StatusCode::kInvalidArgument);
    const std::vector<int32_t> dup = {3, 3};
    EXPECT_EQ(gpu.Decode(dup.data(), two.data(), 2, lg.data()).code(), StatusCode::kInvalidArgument);
    const std::vector<int32_t> nine_slots = {0, 1, 2, 3, 4, 5, 6, 7, 0}, nine_ids(9, 1);
    EXPECT_EQ(gpu.Decode(nine_slots.data(), nine_ids.data(), 9, lg.data()).code(), StatusCode::kInvalidArgument);
    EXPECT_EQ(gpu.CopySlot(0, o.num_slots).code(), StatusCode::kInvalidArgument);
  }

  struct Seq {
    int32_t slot;
    cpu::MambaState state;
    int32_t next = 0;  // the token fed at the next step (the CPU's greedy choice)
    int64_t generated = 0;
    int64_t target = 0;  // decode steps to run (≥ 32; staggered so that batches shrink to 1 at the end)
  };
  std::vector<Seq> seqs;
  const std::vector<int32_t> slots = {5, 0, 3, 7, 2};
  const std::vector<int64_t> lengths = {7, 19, 33, 64, 12};
  double prefill_err = 0;
  for (size_t i = 0; i < slots.size(); ++i) {
    Seq q{slots[i], cpu::MambaState::Zeros(w.config, 1)};
    q.target = kSteps + 3 * static_cast<int64_t>(i);
    const int64_t L = lengths[i];
    const std::vector<int32_t> prompt = random_ids(L);
    std::vector<float> cpu_all;
    ASSERT_OK(cpu::MambaForward(w, prompt.data(), 1, L, &q.state, &cpu_all));
    const float* cpu_last = cpu_all.data() + (L - 1) * V;
    ASSERT_OK(gpu.ResetSlot(q.slot));
    std::vector<float> last(static_cast<size_t>(V), NAN), all;
    if (i == 1) {  // every position's logits (Score), and the last row from the same call
      all.assign(static_cast<size_t>(L * V), NAN);
      ASSERT_OK(gpu.Prefill(q.slot, prompt.data(), L, last.data(), all.data()));
      const double e = RelError(all.data(), cpu_all.data(), all.size());
      EXPECT_LE(e, tol) << what << ": all-position logits";
      prefill_err = std::max(prefill_err, e);
      EXPECT_TRUE(std::equal(last.begin(), last.end(), all.end() - V)) << "last row differs from all_logits' last";
    } else if (i == 3) {  // two chunks: the second continues the first's state
      ASSERT_OK(gpu.Prefill(q.slot, prompt.data(), 40, nullptr, nullptr));
      ASSERT_OK(gpu.Prefill(q.slot, prompt.data() + 40, L - 40, last.data(), nullptr));
    } else {
      ASSERT_OK(gpu.Prefill(q.slot, prompt.data(), L, last.data(), nullptr));
    }
    const double e = RelError(last.data(), cpu_last, static_cast<size_t>(V));
    EXPECT_LE(e, 2 * tol) << what << ": prefill of sequence " << i << " (" << L << " tokens)";
    prefill_err = std::max(prefill_err, e);
    q.next = ArgmaxRow(cpu_last, V);
    EXPECT_TRUE(SameOrNearTie(cpu_last, V, ArgmaxRow(last.data(), V), q.next, 1e-2)) << what << " prefill " << i;
    seqs.push_back(std::move(q));
  }

  double decode_err = 0, decode_num = 0, decode_den = 0;
  int64_t equal = 0, total = 0;
  std::set<int64_t> buckets;
  bool forked = false;
  std::vector<float> gpu_lg(static_cast<size_t>(o.max_batch * V)), cpu_lg;
  for (int64_t step = 0;; ++step) {
    // The fork: slot 6 takes sequence 0's state; the first step feeds both the same token (their
    // rows must agree), later steps the fork's own greedy tokens.
    if (step == 12 && !forked) {
      ASSERT_OK(gpu.CopySlot(seqs[0].slot, 6));
      Seq f{6, seqs[0].state, seqs[0].next, seqs[0].generated, kSteps + 3 * 5};
      seqs.push_back(std::move(f));
      forked = true;
    }
    std::vector<size_t> active;
    for (size_t i = 0; i < seqs.size(); ++i)
      if (seqs[i].generated < seqs[i].target && (step + static_cast<int64_t>(i)) % 4 != 0) active.push_back(i);
    if (active.empty())
      for (size_t i = 0; i < seqs.size(); ++i)
        if (seqs[i].generated < seqs[i].target) active.push_back(i);
    if (active.empty()) break;
    if (step == 12) {  // sequence 0 and its fork side by side
      active.erase(std::remove_if(active.begin(), active.end(), [&](size_t i) { return i == 0 || i + 1 == seqs.size(); }),
                   active.end());
      active.insert(active.begin(), {0, seqs.size() - 1});
    }
    std::shuffle(active.begin() + (step == 12 ? 2 : 0), active.end(), g);
    const int64_t B = static_cast<int64_t>(active.size());
    buckets.insert(DecodeBucket(B, o.max_batch));
    std::vector<int32_t> step_slots, step_ids;
    for (size_t i : active) step_slots.push_back(seqs[i].slot), step_ids.push_back(seqs[i].next);
    std::fill(gpu_lg.begin(), gpu_lg.end(), NAN);
    ASSERT_OK(gpu.Decode(step_slots.data(), step_ids.data(), B, gpu_lg.data()));
    if (step == 12) {
      const double fork_diff = RelError(gpu_lg.data() + V, gpu_lg.data(), static_cast<size_t>(V));
      std::printf("[gpu] %s: forked slot vs its source in one step, rel diff %.3e\n", what.c_str(), fork_diff);
      EXPECT_LE(fork_diff, 1e-6) << what << ": CopySlot's copy decodes differently";
    }
    for (int64_t b = 0; b < B; ++b) {
      Seq& q = seqs[active[static_cast<size_t>(b)]];
      ASSERT_OK(cpu::MambaForward(w, &q.next, 1, 1, &q.state, &cpu_lg));
      const float* row = gpu_lg.data() + b * V;
      const double e = RelError(row, cpu_lg.data(), static_cast<size_t>(V));
      decode_err = std::max(decode_err, e);
      EXPECT_LE(e, 2 * tol) << what << ": decode step " << step << " row " << b << " (batch " << B << ")";
      for (int64_t v = 0; v < V; ++v) {
        const double d = static_cast<double>(row[v]) - cpu_lg[v];
        decode_num += d * d;
        decode_den += static_cast<double>(cpu_lg[v]) * cpu_lg[v];
      }
      const int32_t want = ArgmaxRow(cpu_lg.data(), V), got = ArgmaxRow(row, V);
      equal += got == want;
      ++total;
      if (got != want) {
        EXPECT_TRUE(SameOrNearTie(cpu_lg.data(), V, got, want, 1e-2))
            << what << ": greedy id " << got << " vs CPU " << want << " at step " << step << " row " << b;
      }
      q.next = want;
      if (forked && step == 12 && b == 1) q.next = static_cast<int32_t>((want + 1) % V);  // the fork goes its own way
      ++q.generated;
    }
  }
  for (const Seq& q : seqs) {
    EXPECT_EQ(q.generated, q.target);
    EXPECT_GE(q.generated, kSteps);
  }
  const double decode_all = std::sqrt(decode_num / decode_den);
  EXPECT_LE(decode_all, tol) << what << ": decode logits over every row and step";
  EXPECT_GE(equal, total - total / 20) << what << ": greedy ids differ (near ties) in more than 5% of the steps";
  EXPECT_EQ(buckets, (std::set<int64_t>{1, 2, 4, 8})) << what << ": every bucket exercised";
  std::printf("[gpu] %s serving backend vs CPU: prefill logits rel error %.3e, decode %.3e (worst row %.3e, buckets "
              "1-8), greedy ids equal %lld/%lld, %.1f MiB on the device\n",
              what.c_str(), prefill_err, decode_all, decode_err, static_cast<long long>(equal),
              static_cast<long long>(total), gpu.memory_bytes() / 1048576.0);
}

// The quantized export of mamba-tiny (mambaquant W8A8, scope linear), written once per process.
std::string TinyInt8ExportDir() {
  static const std::string dir = [] {
    const std::string out = (std::filesystem::temp_directory_path() / ("mq-seq-backend-tiny-w8a8-" + std::to_string(::getpid()))).string();
    std::filesystem::remove_all(out);
    quant::QuantizeOptions o;
    o.model_dir = testing::RepoPath("models/mamba-tiny");
    o.output_dir = out;
    o.calib_text_path = testing::RepoPath("models/text/calib.txt");
    o.num_samples = 8;
    o.seq_len = 128;
    auto r = quant::QuantizeModel(o, nullptr);
    EXPECT_TRUE(r.ok()) << r.status().ToString();
    return r.ok() ? out : std::string();
  }();
  return dir;
}

struct SequenceBackendCase {
  std::string name;
  std::string dir;  // empty: absent (skipped)
  bool int8;
  double tol;
};

std::vector<SequenceBackendCase> SequenceBackendCases() {
  std::vector<SequenceBackendCase> cases = {{"mamba-tiny FP16", testing::RepoPath("models/mamba-tiny"), false, 1e-2},
                                            {"mamba-tiny INT8 export", TinyInt8ExportDir(), true, 2e-2}};
  auto small = testing::Fixture("small");
  if (!small.model_dir.empty()) cases.push_back({"mamba-small FP16", small.model_dir, false, 1e-2});
  if (const char* q = std::getenv("MQ_QUANT_SMALL_DIR"); q != nullptr && testing::Exists(q))
    cases.push_back({"mq-quant-small INT8", q, true, 2e-2});
  return cases;
}

TEST(CudaSequenceBackendTest, PrefillDecodeAndCopySlotMatchCpuReference) {
  MQ_REQUIRE_GPU();
  for (const SequenceBackendCase& c : SequenceBackendCases()) {
    SCOPED_TRACE(c.name);
    ASSERT_FALSE(c.dir.empty()) << c.name << ": model directory missing";
    auto loaded = LoadModel(c.dir);
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    ASSERT_EQ(loaded->quantized, c.int8);
    auto backend = CudaSequenceBackend::Open(c.dir, SequenceTestOptions());
    ASSERT_TRUE(backend.ok()) << backend.status().ToString();
    EXPECT_EQ((*backend)->int8(), c.int8);
    EXPECT_EQ((*backend)->decode_buckets(), (std::vector<int64_t>{1, 2, 4, 8}));
    EXPECT_EQ((*backend)->scratch_slot(), 8);
    const MambaConfig& cfg = loaded->weights.config;
    const uint64_t state_pool = 9ull * cfg.num_hidden_layers * cfg.intermediate_size * (cfg.conv_kernel - 1 + cfg.state_size) * 4;
    EXPECT_GT((*backend)->memory_bytes(), state_pool);
    ExpectSequenceBackendMatchesCpu(**backend, loaded->weights, c.name, c.tol);
  }
  if (!TinyInt8ExportDir().empty()) std::filesystem::remove_all(TinyInt8ExportDir());
}

// Too large a state pool is refused at creation, saying how much memory there was (mamba-small:
// 2.8 MB of state a slot, 65536 slots ≈ 183 GB, more than any card this runs on).
TEST(CudaSequenceBackendTest, StatePoolThatDoesNotFitIsResourceExhausted) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(paths, "small");
  auto w = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(w.ok());
  size_t free_bytes = 0, total = 0;
  ASSERT_EQ(cudaMemGetInfo(&free_bytes, &total), cudaSuccess);
  const MambaConfig& c = w->config;
  const uint64_t per_slot = 4ull * c.num_hidden_layers * c.intermediate_size * (c.conv_kernel - 1 + c.state_size);
  serve::SequenceBackendOptions o = SequenceTestOptions();
  o.num_slots = 65536;
  if (static_cast<uint64_t>(o.num_slots) * per_slot <= free_bytes) GTEST_SKIP() << "the GPU holds 65536 slots";
  auto b = CudaSequenceBackend::Create(*w, o);
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted) << b.status().ToString();
  EXPECT_NE(b.status().message().find("were free"), std::string::npos) << b.status().ToString();
  std::printf("[gpu] oversized state pool refused: %s\n", b.status().ToString().c_str());
  // The device is still usable afterwards.
  auto ok = CudaSequenceBackend::Create(*w, SequenceTestOptions());
  EXPECT_TRUE(ok.ok()) << ok.status().ToString();
}

// Several prompts prefilled in one forward (PrefillBatch) continue each slot as its own Prefill
// does: the last-position logits of three sequences, and the next decode step after them.
TEST(CudaSequenceBackendTest, PrefillBatchEqualsPrefillOneByOne) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(paths, "small");
  auto w = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(w.ok());
  auto a = CudaSequenceBackend::Create(*w, SequenceTestOptions());
  auto b = CudaSequenceBackend::Create(*w, SequenceTestOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t V = w->config.vocab_size, n = 16;
  std::vector<int32_t> ids(3 * n);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % static_cast<size_t>(V));
  const std::vector<int32_t> slots = {5, 1, 3};
  std::vector<float> batched(3 * V), single(3 * V);
  for (int32_t s : slots) {
    ASSERT_TRUE((*a)->ResetSlot(s).ok());
    ASSERT_TRUE((*b)->ResetSlot(s).ok());
  }
  ASSERT_TRUE((*a)->PrefillBatch(slots.data(), ids.data(), 3, n, batched.data()).ok());
  for (int r = 0; r < 3; ++r)
    ASSERT_TRUE((*b)->Prefill(slots[r], ids.data() + r * n, n, single.data() + r * V, nullptr).ok());
  const double prefill_err = testing::RelError(batched.data(), single.data(), batched.size());
  std::vector<int32_t> next = {7, 8, 9};
  ASSERT_TRUE((*a)->Decode(slots.data(), next.data(), 3, batched.data()).ok());
  ASSERT_TRUE((*b)->Decode(slots.data(), next.data(), 3, single.data()).ok());
  const double decode_err = testing::RelError(batched.data(), single.data(), batched.size());
  std::printf("[gpu] PrefillBatch vs one by one: prefill logits %.2e, next decode step %.2e\n", prefill_err, decode_err);
  EXPECT_LT(prefill_err, 1e-2);
  EXPECT_LT(decode_err, 1e-2);
  for (int r = 0; r < 3; ++r) EXPECT_EQ(ArgmaxRow(batched.data() + r * V, V), ArgmaxRow(single.data() + r * V, V));
}

// A plain greedy step picks on the device (row arg max) what the host picks from Decode's logits.
TEST(CudaSequenceBackendTest, DecodeGreedyEqualsDecodeAndHostGreedy) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(paths, "small");
  auto w = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(w.ok());
  auto a = CudaSequenceBackend::Create(*w, SequenceTestOptions());
  auto b = CudaSequenceBackend::Create(*w, SequenceTestOptions());
  ASSERT_TRUE(a.ok() && b.ok());
  const int64_t V = w->config.vocab_size;
  const std::vector<int32_t> slots = {0, 2, 4, 6, 7};
  std::vector<int32_t> ids_a = {11, 22, 33, 44, 55}, ids_b = ids_a;
  for (int32_t s : slots) {
    ASSERT_TRUE((*a)->ResetSlot(s).ok());
    ASSERT_TRUE((*b)->ResetSlot(s).ok());
  }
  std::vector<float> logits(slots.size() * V);
  int equal = 0, total = 0;
  for (int step = 0; step < 24; ++step) {
    std::vector<int32_t> next(slots.size());
    ASSERT_TRUE((*a)->DecodeGreedy(slots.data(), ids_a.data(), static_cast<int64_t>(slots.size()), next.data()).ok());
    ASSERT_TRUE((*b)->Decode(slots.data(), ids_b.data(), static_cast<int64_t>(slots.size()), logits.data()).ok());
    for (size_t r = 0; r < slots.size(); ++r) {
      const int32_t host = serve::GreedyToken(logits.data() + r * V, V);
      equal += next[r] == host;
      ++total;
      ids_a[r] = next[r];
      ids_b[r] = host;
    }
  }
  std::printf("[gpu] DecodeGreedy = Decode + host greedy: %d/%d\n", equal, total);
  EXPECT_EQ(equal, total);  // same graphs, same logits: comparisons only
}

// A worker unloads models to make room for others: every unload must give the device memory back.
// Twenty loads and unloads of mamba-small (float → FP16, with its full state pool, buffers and
// decode graphs) end where the first one started.
TEST(CudaSequenceBackendTest, LoadUnloadTwentyTimesReturnsDeviceMemory) {
  MQ_REQUIRE_GPU();
  auto paths = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(paths, "small");
  auto w = LoadMambaWeights(paths.model_dir);
  ASSERT_TRUE(w.ok());
  auto free_now = [] {
    size_t f = 0, t = 0;
    EXPECT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    EXPECT_EQ(cudaMemGetInfo(&f, &t), cudaSuccess);
    return static_cast<int64_t>(f);
  };
  { auto warm = CudaSequenceBackend::Create(*w, SequenceTestOptions()); ASSERT_TRUE(warm.ok()); }  // context, cuBLASLt
  const int64_t baseline = free_now();
  int64_t held = 0;
  for (int i = 0; i < 20; ++i) {
    auto b = CudaSequenceBackend::Create(*w, SequenceTestOptions());
    ASSERT_TRUE(b.ok()) << b.status().ToString();
    held = baseline - free_now();
    EXPECT_GT(held, 0);
  }
  const int64_t after = free_now();
  std::printf("[gpu] load/unload x20: %.1f MB held while loaded, free memory after %+.3f MB vs baseline\n", held / 1e6,
              (after - baseline) / 1e6);
  // The driver hands memory back in 2 MiB pages: allow one.
  EXPECT_GE(after, baseline - (2 << 20));
}

// The plugin the worker loads (libmq_cuda_backend.so, written next to mq-worker in build/worker):
// probe, a model served through it against the CPU reference, a quantization accelerator, memory.
TEST(CudaBackendPluginGpuTest, ProbeServeAndQuantizeThroughThePlugin) {
  MQ_REQUIRE_GPU();
  std::string path;
  if (const char* env = std::getenv("MQ_CUDA_BACKEND_PLUGIN")) {
    path = env;
  } else {
    const auto exe = std::filesystem::read_symlink("/proc/self/exe");  // <build>/tests/engine/cuda_gpu_test
    path = (exe.parent_path().parent_path().parent_path() / "worker" / "libmq_cuda_backend.so").string();
  }
  if (!testing::Exists(path)) GTEST_SKIP() << path << " not built (ninja mq_cuda_backend)";
  void* handle = dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(handle, nullptr) << dlerror();
  using EntryFn = const serve::BackendPlugin* (*)();
  auto entry = reinterpret_cast<EntryFn>(dlsym(handle, "mq_backend_plugin"));
  ASSERT_NE(entry, nullptr) << dlerror();
  const serve::BackendPlugin* plugin = entry();
  ASSERT_NE(plugin, nullptr);
  ASSERT_EQ(plugin->abi_version, serve::kBackendPluginAbiVersion);
  serve::DeviceDescription d;
  ASSERT_OK(plugin->probe(&d));
  EXPECT_EQ(d.device, "cuda");
  EXPECT_FALSE(d.name.empty());
  EXPECT_GT(d.total_bytes, 0u);
  EXPECT_GT(d.free_bytes, 0u);
  std::printf("[gpu] plugin probe: %s, %.1f GiB (%.1f free)\n", d.name.c_str(), d.total_bytes / 1073741824.0,
              d.free_bytes / 1073741824.0);
  const uint64_t used_before = plugin->device_memory_used();
  EXPECT_GT(used_before, 0u);

  const std::string tiny = testing::RepoPath("models/mamba-tiny");
  auto w = LoadMambaWeights(tiny);
  ASSERT_TRUE(w.ok());
  {
    auto model = plugin->open_model(tiny, SequenceTestOptions());
    ASSERT_TRUE(model.ok()) << model.status().ToString();
    EXPECT_EQ((*model)->device(), "cuda");
    EXPECT_GE(plugin->device_memory_used(), used_before + (*model)->memory_bytes() / 2);
    ExpectSequenceBackendMatchesCpu(**model, *w, "plugin mamba-tiny FP16", 1e-2);
  }
  quant::QuantizeOptions qo;
  qo.model_dir = tiny;
  qo.calib_text_path = testing::RepoPath("models/text/calib.txt");
  std::string why_not;
  auto accel = plugin->open_quant(qo, &why_not);
  ASSERT_TRUE(accel.ok()) << accel.status().ToString();
  ASSERT_NE(*accel, nullptr) << "the GPU declined a default job: " << why_not;
  EXPECT_EQ((*accel)->name().rfind("cuda", 0), 0u) << (*accel)->name();
  // A job the GPU does not run (static activation scales): null, with the reason.
  qo.act_granularity = "per_tensor";
  why_not.clear();
  auto declined = plugin->open_quant(qo, &why_not);
  ASSERT_TRUE(declined.ok()) << declined.status().ToString();
  EXPECT_EQ(*declined, nullptr);
  EXPECT_FALSE(why_not.empty());
  std::printf("[gpu] plugin open_quant: %s; per_tensor job declined: %s\n", (*accel)->name().c_str(), why_not.c_str());
  // The plugin stays loaded (as in the worker): no dlclose.
}

}  // namespace
}  // namespace mq::cuda
