// Next-token sampling (eval/sampling.h): the reference semantics the CPU and the GPU decode loop
// share — validation, greedy limits, determinism from (seed, sequence, step), the distribution
// and the top-k / top-p cuts — and a CPU twin of the GPU kernel's chunked selection.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include "eval/sampling.h"
#include "eval/sampling_math.h"

namespace mq {
namespace {

std::vector<float> LogitsFor(const std::vector<double>& probs) {
  std::vector<float> l;
  for (double p : probs) l.push_back(static_cast<float>(std::log(p)));
  return l;
}

std::vector<double> Frequencies(const std::vector<float>& logits, const SamplingOptions& o, int draws) {
  std::vector<double> f(logits.size(), 0.0);
  for (int s = 0; s < draws; ++s)
    f[SampleToken(logits.data(), static_cast<int64_t>(logits.size()), o, 3, static_cast<uint64_t>(s))] += 1.0 / draws;
  return f;
}

TEST(SamplingTest, BadOptionsAreRefused) {
  EXPECT_TRUE(ValidateSampling(SamplingOptions{}).ok());
  for (SamplingOptions o : {SamplingOptions{-1.0f, 0, 1.0f, 0}, SamplingOptions{NAN, 0, 1.0f, 0},
                            SamplingOptions{1.0f, -2, 1.0f, 0}, SamplingOptions{1.0f, 0, 0.0f, 0},
                            SamplingOptions{1.0f, 0, 1.5f, 0}, SamplingOptions{INFINITY, 0, 1.0f, 0}}) {
    EXPECT_EQ(ValidateSampling(o).code(), StatusCode::kInvalidArgument);
  }
}

TEST(SamplingTest, PhiloxMatchesTheReferenceVector) {
  // Random123's known answer for Philox4x32-10, counter 0, key 0: first word 0x6627e8d5.
  EXPECT_EQ(sampling::Philox(0, 0, 0), 0x6627e8d5u);
  EXPECT_NE(sampling::Philox(0, 0, 1), sampling::Philox(0, 0, 0));
  EXPECT_NE(sampling::Philox(0, 1, 0), sampling::Philox(0, 0, 0));
  EXPECT_NE(sampling::Philox(1, 0, 0), sampling::Philox(0, 0, 0));
  const double u = sampling::Uniform(7, 2, 9);
  EXPECT_GE(u, 0.0);
  EXPECT_LT(u, 1.0);
}

TEST(SamplingTest, GreedyLimits) {
  const std::vector<float> logits = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
  EXPECT_EQ(SampleToken(logits.data(), 5, SamplingOptions{}, 0, 0), 1);  // lowest index among maxima
  for (uint64_t step = 0; step < 50; ++step) {
    SamplingOptions topk1{1.5f, 1, 1.0f, 11};
    // top_k = 1 keeps every token tied at the largest logit (here 1 and 3), nothing else.
    const int32_t t = SampleToken(logits.data(), 5, topk1, 0, step);
    EXPECT_TRUE(t == 1 || t == 3) << t;
    SamplingOptions nucleus{1.0f, 0, 1e-6f, 11};
    const int32_t n = SampleToken(logits.data(), 5, nucleus, 0, step);
    EXPECT_TRUE(n == 1 || n == 3) << n;
  }
}

TEST(SamplingTest, SameSeedSameTokensOtherSeedOtherTokens) {
  std::mt19937 g(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  std::vector<float> logits(1000);
  for (auto& x : logits) x = nd(g);
  SamplingOptions a{0.8f, 50, 0.9f, 42}, b = a;
  b.seed = 43;
  int same_seed = 0, other_seed = 0;
  for (uint64_t step = 0; step < 200; ++step) {
    const int32_t t = SampleToken(logits.data(), 1000, a, 1, step);
    same_seed += t == SampleToken(logits.data(), 1000, a, 1, step);
    other_seed += t == SampleToken(logits.data(), 1000, b, 1, step);
  }
  EXPECT_EQ(same_seed, 200);
  EXPECT_LT(other_seed, 150);  // 50 candidates: agreement by chance is far below this
}

TEST(SamplingTest, FrequenciesFollowTheTruncatedSoftmax) {
  const std::vector<double> probs = {0.4, 0.25, 0.15, 0.1, 0.06, 0.04};
  const std::vector<float> logits = LogitsFor(probs);
  constexpr int kDraws = 40000;  // binomial sd ≤ 0.25 %
  // Plain sampling at T = 1.
  std::vector<double> f = Frequencies(logits, SamplingOptions{1.0f, 0, 1.0f, 5}, kDraws);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], probs[i], 0.012) << i;
  // Top-3: renormalized over {0, 1, 2}.
  f = Frequencies(logits, SamplingOptions{1.0f, 3, 1.0f, 5}, kDraws);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], i < 3 ? probs[i] / 0.8 : 0.0, 0.012) << i;
  // Top-p 0.7: {0.4, 0.25} holds 0.65 < 0.7, so the nucleus is {0, 1, 2} (0.8).
  f = Frequencies(logits, SamplingOptions{1.0f, 0, 0.7f, 5}, kDraws);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], i < 3 ? probs[i] / 0.8 : 0.0, 0.012) << i;
  // Temperature 2 flattens: p ∝ sqrt(probs).
  f = Frequencies(logits, SamplingOptions{2.0f, 0, 1.0f, 5}, kDraws);
  double z = 0;
  for (double p : probs) z += std::sqrt(p);
  for (size_t i = 0; i < probs.size(); ++i) EXPECT_NEAR(f[i], std::sqrt(probs[i]) / z, 0.012) << i;
}

// CPU twin of greedy_kernel.cu's SampleRow: the same top-k and top-p threshold searches, then the
// selection over contiguous per-thread chunks with chunk sums added in thread order (the kernel's
// arithmetic, on the host) — the token must equal SampleToken's.
int32_t KernelSampleTwin(const std::vector<float>& row, const SamplingOptions& o, uint64_t seq, uint64_t step,
                         int threads) {
  const int64_t V = static_cast<int64_t>(row.size());
  int64_t arg = 0;
  for (int64_t i = 1; i < V; ++i)
    if (row[i] > row[arg]) arg = i;
  const float m = row[arg];
  // Block sums: per-thread strided partials, then added in thread order.
  auto block_sum = [&](auto term) {
    std::vector<double> part(static_cast<size_t>(threads), 0.0);
    for (int t = 0; t < threads; ++t)
      for (int64_t i = t; i < V; i += threads) part[t] += term(i);
    double s = 0;
    for (double p : part) s += p;
    return s;
  };
  uint32_t kkey = 0;
  if (o.top_k > 0 && o.top_k < V)
    kkey = sampling::LargestKey([&](uint32_t k) { return block_sum([&](int64_t i) { return sampling::OrderedKey(row[i]) >= k ? 1.0 : 0.0; }); },
                  o.top_k);
  auto weight = [&](int64_t i) {
    return sampling::OrderedKey(row[i]) >= kkey ? sampling::Weight(row[i], m, o.temperature) : 0.0f;
  };
  const double total = block_sum([&](int64_t i) { return static_cast<double>(weight(i)); });
  uint32_t tau = 0;
  if (o.top_p < 1.0f)
    tau = sampling::LargestKey([&](uint32_t t) { return block_sum([&](int64_t i) { const float w = weight(i); return FloatBits(w) >= t ? static_cast<double>(w) : 0.0; }); },
                 static_cast<double>(o.top_p) * total);
  auto nucleus = [&](int64_t i) {
    const float w = weight(i);
    return (w > 0.0f && FloatBits(w) >= tau) ? w : 0.0f;
  };
  const int64_t chunk = (V + threads - 1) / threads;
  std::vector<double> local(static_cast<size_t>(threads), 0.0);
  for (int t = 0; t < threads; ++t)
    for (int64_t i = t * chunk; i < std::min(V, (t + 1) * chunk); ++i) local[t] += nucleus(i);
  double all = 0;
  std::vector<double> prefix(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) prefix[t] = all, all += local[t];
  const double target = sampling::Uniform(o.seed, seq, step) * all;
  for (int t = 0; t < threads; ++t) {
    if (!(local[t] > 0 && prefix[t] <= target && target < prefix[t] + local[t])) continue;
    double run = prefix[t];
    for (int64_t i = t * chunk; i < std::min(V, (t + 1) * chunk); ++i) {
      const float w = nucleus(i);
      if (w <= 0.0f) continue;
      run += w;
      if (run > target) return static_cast<int32_t>(i);
    }
  }
  int64_t last = arg;
  for (int64_t i = 0; i < V; ++i)
    if (nucleus(i) > 0.0f) last = i;
  return static_cast<int32_t>(last);
}

TEST(SamplingTest, GpuKernelSelectionTwinMatchesReference) {
  std::mt19937 g(9);
  std::normal_distribution<float> nd(0.0f, 3.0f);
  std::vector<float> row(5000);
  int equal = 0, total = 0;
  for (int trial = 0; trial < 8; ++trial) {
    for (auto& x : row) x = nd(g);
    for (const SamplingOptions& o : {SamplingOptions{1.0f, 0, 1.0f, 1}, SamplingOptions{0.7f, 40, 1.0f, 2},
                                     SamplingOptions{1.3f, 0, 0.9f, 3}, SamplingOptions{0.9f, 100, 0.8f, 4}}) {
      for (uint64_t step = 0; step < 8; ++step) {
        equal += KernelSampleTwin(row, o, 2, step, 1024) == SampleToken(row.data(), 5000, o, 2, step);
        ++total;
      }
    }
  }
  // Only the order of double additions differs: a flip needs the draw within ~1e-15 of a boundary.
  EXPECT_EQ(equal, total);
}

}  // namespace
}  // namespace mq
