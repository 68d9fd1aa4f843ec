// Per-completion token selection (serve/token_sampler.h): equality with mq::SampleToken where no
// processing applies, the exact effect of each penalty (pinned with greedy ties: the lowest id
// wins among equal maxima, so a tie against a neighbouring float value pins a logit exactly),
// min_p, bans, non-finite logits, and the model's log-probabilities.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <random>
#include <set>
#include <vector>

#include "eval/sampling.h"
#include "serve/token_sampler.h"

namespace mq::serve {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

std::vector<float> RandomLogits(int64_t V, uint32_t seed, float scale = 3.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, scale);
  std::vector<float> l(static_cast<size_t>(V));
  for (float& x : l) x = d(rng);
  return l;
}

SamplingParams Greedy() { return SamplingParams{}; }

int32_t Pick(TokenSampler& s, const std::vector<float>& logits, const std::vector<int32_t>& banned = {}) {
  auto c = s.Next(logits.data(), banned, -1);
  EXPECT_TRUE(c.ok()) << c.status().ToString();
  return c.ok() ? c->token : -1;
}

float Up(float x) { return std::nextafter(x, kInf); }

TEST(TokenSamplerTest, GreedyEqualsSampleTokenBitwise) {
  const int64_t V = 50280;
  for (uint32_t seed = 0; seed < 20; ++seed) {
    std::vector<float> logits = RandomLogits(V, seed);
    if (seed % 2 == 0) {  // equal maxima: the lowest index must win, as in SampleToken
      const auto m = *std::max_element(logits.begin(), logits.end());
      logits[V - 7] = m;
      logits[1234] = m;
    }
    TokenSampler s(Greedy(), 99, V, {1, 2, 3});
    const int32_t want = SampleToken(logits.data(), V, SamplingOptions{}, 0, 0);
    EXPECT_EQ(Pick(s, logits), want);
    if (seed % 2 == 0) EXPECT_LT(want, 1235);
  }
}

TEST(TokenSamplerTest, SeededSamplingEqualsSampleTokenOfSequenceZero) {
  const int64_t V = 5000;
  SamplingParams p;
  p.temperature = 0.8f;
  p.top_k = 200;
  p.top_p = 0.9f;
  p.seed = 12345;  // not read: the constructor's seed is the completion's
  for (uint64_t seed : {7ull, 8ull}) {
    TokenSampler s(p, seed, V, {});
    for (uint64_t step = 0; step < 40; ++step) {
      const std::vector<float> logits = RandomLogits(V, static_cast<uint32_t>(step));
      const int32_t want = SampleToken(logits.data(), V, SamplingOptions{0.8f, 200, 0.9f, seed}, 0, step);
      EXPECT_EQ(Pick(s, logits), want) << "seed " << seed << " step " << step;
    }
    EXPECT_EQ(s.steps(), 40);
  }
}

TEST(TokenSamplerTest, SameSeedReproducesDifferentSeedsDiffer) {
  const int64_t V = 1000;
  SamplingParams p;
  p.temperature = 1.0f;
  p.repetition_penalty = 1.3f;
  p.frequency_penalty = 0.2f;
  const std::vector<float> logits = RandomLogits(V, 3, 1.0f);  // flat enough that draws vary
  auto run = [&](uint64_t seed) {
    TokenSampler s(p, seed, V, {5, 6, 7});
    std::vector<int32_t> out;
    for (int i = 0; i < 64; ++i) out.push_back(Pick(s, logits));
    return out;
  };
  const std::vector<int32_t> a = run(42);
  EXPECT_EQ(run(42), a);
  EXPECT_NE(run(43), a);
  EXPECT_GT(std::set<int32_t>(a.begin(), a.end()).size(), 10u);
}

TEST(TokenSamplerTest, RepetitionPenaltyDividesPositiveMultipliesNegative) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  // 4 → 2: ties with 2 (token 0 wins as lower id), loses to the next float above 2.
  {
    TokenSampler s(p, 0, 2, {0});
    EXPECT_EQ(Pick(s, {4.0f, 2.0f}), 0);
  }
  {
    TokenSampler s(p, 0, 2, {0});
    EXPECT_EQ(Pick(s, {4.0f, Up(2.0f)}), 1);
  }
  // -4 → -8, the same way.
  {
    TokenSampler s(p, 0, 2, {0});
    EXPECT_EQ(Pick(s, {-4.0f, -8.0f}), 0);
  }
  {
    TokenSampler s(p, 0, 2, {0});
    EXPECT_EQ(Pick(s, {-4.0f, Up(-8.0f)}), 1);
  }
  // It changes the argmax: 4 → 2 < 3.
  {
    TokenSampler plain(Greedy(), 0, 2, {0});
    EXPECT_EQ(Pick(plain, {4.0f, 3.0f}), 0);
    TokenSampler s(p, 0, 2, {0});
    EXPECT_EQ(Pick(s, {4.0f, 3.0f}), 1);
  }
}

// A penalty near 0 (allowed: (0, 10]) takes positive logits past the largest float: they saturate
// there, so the draw stays a draw (it was NaN, and the seed was ignored), among the saturated ones.
TEST(TokenSamplerTest, TinyRepetitionPenaltySaturatesInsteadOfOverflowing) {
  SamplingParams p;
  p.temperature = 1.0f;
  p.repetition_penalty = 1e-45f;
  const std::vector<float> logits = {-1.0f, 5.0f, 3.0f, 9.0f, -kInf};
  std::set<int32_t> seen;
  for (uint64_t seed = 0; seed < 64; ++seed) {
    TokenSampler s(p, seed, 5, {1, 2, 4});
    auto c = s.Next(logits.data(), {}, 2);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_TRUE(c->token == 1 || c->token == 2) << c->token;  // 9 of token 3 is far below
    EXPECT_TRUE(std::isfinite(c->logprob));                     // the model's, not the penalized one
    seen.insert(c->token);
  }
  EXPECT_EQ(seen.size(), 2u);  // the seed matters again
  // Greedy: the lowest id among the saturated; the banned (-inf) prompt token 4 stays out.
  p.temperature = 0.0f;
  TokenSampler g(p, 0, 5, {1, 2, 4});
  EXPECT_EQ(Pick(g, logits), 1);
}

TEST(TokenSamplerTest, RepetitionPenaltyCountsOutputOnceWhateverTheCount) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  TokenSampler s(p, 0, 3, {});
  const std::vector<float> logits = {4.0f, 3.0f, -1.0f};
  EXPECT_EQ(Pick(s, logits), 0);  // nothing seen yet
  EXPECT_EQ(Pick(s, logits), 1);  // 0 → 2 < 3
  EXPECT_EQ(Pick(s, logits), 0);  // 2 > 1.5
  EXPECT_EQ(Pick(s, logits), 0);  // still 2 (once, not per occurrence) > 1.5
  // In both prompt and output: still once (4 → 2 > 1.9, twice would be 1 < 1.9).
  TokenSampler both(p, 0, 2, {0, 0, 0});
  EXPECT_EQ(Pick(both, {4.0f, 1.9f}), 0);
  EXPECT_EQ(Pick(both, {4.0f, 1.9f}), 0);
}

TEST(TokenSamplerTest, PresencePenaltySubtractsOnceFromGeneratedTokensOnly) {
  SamplingParams p;
  p.presence_penalty = 0.5f;
  {
    TokenSampler s(p, 0, 2, {});
    EXPECT_EQ(Pick(s, {1.0f, 0.5f}), 0);
    EXPECT_EQ(Pick(s, {1.0f, 0.5f}), 0);  // 1 − 0.5 = 0.5 ties, lower id
    EXPECT_EQ(Pick(s, {1.0f, 0.5f}), 0);  // once, not per occurrence
  }
  {
    TokenSampler s(p, 0, 2, {0, 0});  // the prompt does not count
    EXPECT_EQ(Pick(s, {1.0f, Up(0.5f)}), 0);
    EXPECT_EQ(Pick(s, {1.0f, Up(0.5f)}), 1);
  }
}

TEST(TokenSamplerTest, FrequencyPenaltySubtractsPerOccurrence) {
  SamplingParams p;
  p.frequency_penalty = 0.5f;
  TokenSampler s(p, 0, 2, {});
  const std::vector<float> logits = {2.0f, 1.0f};
  // 2, 1.5, 1.0 (tie, lower id), 0.5 < 1.
  EXPECT_EQ(Pick(s, logits), 0);
  EXPECT_EQ(Pick(s, logits), 0);
  EXPECT_EQ(Pick(s, logits), 0);
  EXPECT_EQ(Pick(s, logits), 1);
  TokenSampler above(p, 0, 2, {});
  const std::vector<float> l2 = {2.0f, Up(1.0f)};
  EXPECT_EQ(Pick(above, l2), 0);
  EXPECT_EQ(Pick(above, l2), 0);
  EXPECT_EQ(Pick(above, l2), 1);
}

TEST(TokenSamplerTest, PresenceAndFrequencyTogether) {
  SamplingParams p;
  p.presence_penalty = 1.0f;
  p.frequency_penalty = 0.5f;
  TokenSampler s(p, 0, 2, {});
  const std::vector<float> logits = {3.0f, 1.0f};
  EXPECT_EQ(Pick(s, logits), 0);  // 3
  EXPECT_EQ(Pick(s, logits), 0);  // 3 − 0.5 − 1 = 1.5
  EXPECT_EQ(Pick(s, logits), 0);  // 3 − 1 − 1 = 1: tie
  EXPECT_EQ(Pick(s, logits), 1);  // 3 − 1.5 − 1 = 0.5
}

TEST(TokenSamplerTest, RepetitionComesBeforePresence) {
  SamplingParams p;
  p.repetition_penalty = 2.0f;
  p.presence_penalty = 1.0f;
  TokenSampler s(p, 0, 2, {});
  const std::vector<float> logits = {4.0f, 1.2f};
  EXPECT_EQ(Pick(s, logits), 0);
  EXPECT_EQ(Pick(s, logits), 1);  // 4 / 2 − 1 = 1 < 1.2; the other order would give 1.5
}

TEST(TokenSamplerTest, BannedTokensAreNeverChosen) {
  const int64_t V = 2000;
  std::vector<float> logits = RandomLogits(V, 5, 1.0f);
  logits[17] = 12.0f;  // dominant: about 87% of the draws
  logits[18] = 10.0f;
  const std::vector<int32_t> banned = {17, 18, 99999, -3};  // out-of-range ids are ignored
  TokenSampler greedy(Greedy(), 0, V, {});
  EXPECT_EQ(Pick(greedy, logits), 17);
  std::vector<float> without = logits;
  without[17] = without[18] = -kInf;
  EXPECT_EQ(Pick(greedy, logits, banned), SampleToken(without.data(), V, SamplingOptions{}, 0, 0));

  SamplingParams p;
  p.temperature = 1.0f;
  TokenSampler s(p, 3, V, {});
  int seen17 = 0;
  for (int i = 0; i < 200; ++i) seen17 += Pick(s, logits) == 17;
  EXPECT_GT(seen17, 150);  // unbanned, 17 dominates
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = Pick(s, logits, banned);
    ASSERT_NE(t, 17);
    ASSERT_NE(t, 18);
  }
}

TEST(TokenSamplerTest, NegativeInfinityHasZeroWeightInSampleToken) {
  // TokenSampler's bans and min_p rely on this: -inf logits are never drawn, whatever top_k/top_p.
  const int64_t V = 64;
  std::vector<float> logits(V, -kInf);
  logits[10] = 0.0f;
  logits[40] = 0.5f;
  logits[63] = -1.0f;
  for (const SamplingOptions& o : {SamplingOptions{1.0f, 0, 1.0f, 1}, SamplingOptions{5.0f, 50, 1.0f, 2},
                                   SamplingOptions{100.0f, 0, 0.999f, 3}, SamplingOptions{2.0f, 64, 0.5f, 4}}) {
    std::set<int32_t> seen;
    for (uint64_t step = 0; step < 2000; ++step) seen.insert(SampleToken(logits.data(), V, o, 0, step));
    for (int32_t t : seen) EXPECT_TRUE(t == 10 || t == 40 || t == 63) << t;
    if (o.top_p == 1.0f) EXPECT_EQ(seen.size(), 3u);
  }
}

TEST(TokenSamplerTest, MinPRemovesExactlyTheTokensBelowTheThreshold) {
  const int64_t V = 1000;
  const std::vector<float> logits = RandomLogits(V, 11, 2.0f);
  const float m = *std::max_element(logits.begin(), logits.end());
  SamplingParams p;
  p.temperature = 0.7f;
  p.min_p = 0.05f;
  auto ratio = [&](int32_t t) { return std::exp((static_cast<double>(logits[t]) - m) / p.temperature); };
  int kept = 0;
  for (int64_t i = 0; i < V; ++i) kept += ratio(static_cast<int32_t>(i)) >= p.min_p;
  ASSERT_GT(kept, 5);
  ASSERT_LT(kept, V / 2);

  TokenSampler with(p, 21, V, {});
  SamplingParams no_min_p = p;
  no_min_p.min_p = 0.0f;
  TokenSampler without(no_min_p, 21, V, {});
  int below_without = 0;
  std::set<int32_t> distinct;
  for (int i = 0; i < 2000; ++i) {
    const int32_t t = Pick(with, logits);
    ASSERT_GE(ratio(t), p.min_p) << "token " << t << " at draw " << i;
    distinct.insert(t);
    below_without += ratio(Pick(without, logits)) < p.min_p;
  }
  EXPECT_GT(below_without, 100);  // the cut matters for this distribution
  EXPECT_GT(distinct.size(), 3u);
}

TEST(TokenSamplerTest, MinPKeepsTheRestInProportion) {
  // p = {0.5, 0.3, 0.15, 0.05}, min_p 0.2: the threshold 0.1 removes token 3 only; token 2 keeps
  // 0.15 / 0.95 of the draws.
  const std::vector<float> logits = {std::log(0.5f), std::log(0.3f), std::log(0.15f), std::log(0.05f)};
  SamplingParams p;
  p.temperature = 1.0f;
  p.min_p = 0.2f;
  TokenSampler s(p, 8, 4, {});
  std::vector<int> count(4, 0);
  const int draws = 8000;
  for (int i = 0; i < draws; ++i) ++count[Pick(s, logits)];
  EXPECT_EQ(count[3], 0);
  EXPECT_NEAR(count[2] / double(draws), 0.15 / 0.95, 0.015);
  EXPECT_NEAR(count[0] / double(draws), 0.5 / 0.95, 0.02);
}

TEST(TokenSamplerTest, MinPDoesNotApplyToGreedy) {
  SamplingParams p;
  p.min_p = 1.0f;
  TokenSampler s(p, 0, 3, {});
  const std::vector<float> logits = {0.0f, 2.0f, 2.0f};
  EXPECT_EQ(Pick(s, logits), 1);
}

// Naive reference: log-softmax in double over the finite logits.
std::vector<double> NaiveLogSoftmax(const std::vector<float>& l) {
  double m = -INFINITY;
  for (float x : l)
    if (std::isfinite(x)) m = std::max(m, double(x));
  double s = 0;
  for (float x : l)
    if (std::isfinite(x)) s += std::exp(double(x) - m);
  std::vector<double> out;
  for (float x : l) out.push_back(std::isfinite(x) ? double(x) - m - std::log(s) : -INFINITY);
  return out;
}

TEST(TokenSamplerTest, LogprobsAreTheRawModelDistribution) {
  const int64_t V = 50280;
  std::vector<float> logits = RandomLogits(V, 17, 4.0f);
  const float m = *std::max_element(logits.begin(), logits.end());
  logits[3000] = m - 0.25f;  // a tie among the best few: lower id first
  logits[200] = m - 0.25f;
  const std::vector<double> ref = NaiveLogSoftmax(logits);
  std::vector<int32_t> order(V);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });

  // Penalties, temperature and cuts change the choice, never the reported logprobs.
  SamplingParams p;
  p.temperature = 0.6f;
  p.top_k = 50;
  p.repetition_penalty = 1.5f;
  p.presence_penalty = 0.5f;
  TokenSampler s(p, 4, V, {order[0], order[1]});
  for (int step = 0; step < 5; ++step) {
    auto c = s.Next(logits.data(), {order[2]}, 20);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    EXPECT_NEAR(c->logprob, ref[c->token], 1e-5);
    ASSERT_EQ(c->top.size(), 20u);
    for (size_t i = 0; i < 20; ++i) {
      EXPECT_EQ(c->top[i].token, order[i]) << i;
      EXPECT_NEAR(c->top[i].logprob, ref[order[i]], 1e-5) << i;
    }
  }
  const auto tied = std::find(order.begin(), order.begin() + 20, 200);
  ASSERT_NE(tied, order.begin() + 20);
  EXPECT_EQ(*(tied + 1), 3000);

  TokenSampler plain(Greedy(), 0, V, {});
  auto only = plain.Next(logits.data(), {}, 0);
  ASSERT_TRUE(only.ok());
  EXPECT_EQ(only->token, order[0]);
  EXPECT_NEAR(only->logprob, ref[order[0]], 1e-5);
  EXPECT_TRUE(only->top.empty());
  auto none = plain.Next(logits.data(), {}, -1);
  ASSERT_TRUE(none.ok());
  EXPECT_EQ(none->logprob, 0.0f);
  EXPECT_TRUE(none->top.empty());
}

TEST(TokenSamplerTest, LogprobsAtScoresAnyToken) {
  const int64_t V = 3000;
  std::vector<float> logits = RandomLogits(V, 23, 5.0f);
  logits[9] = kNaN;
  logits[10] = -kInf;
  const std::vector<double> ref = NaiveLogSoftmax(logits);
  const TokenChoice c = LogprobsAt(logits.data(), V, 1234, 3);
  EXPECT_EQ(c.token, 1234);
  EXPECT_NEAR(c.logprob, ref[1234], 1e-5);
  ASSERT_EQ(c.top.size(), 3u);
  EXPECT_GE(c.top[0].logprob, c.top[1].logprob);
  EXPECT_GE(c.top[1].logprob, c.top[2].logprob);
  EXPECT_NEAR(c.top[0].logprob, *std::max_element(ref.begin(), ref.end()), 1e-5);
  EXPECT_EQ(LogprobsAt(logits.data(), V, 9, 0).logprob, -kInf);   // NaN counts as -inf
  EXPECT_EQ(LogprobsAt(logits.data(), V, 10, 0).logprob, -kInf);
  const std::vector<float> none(4, -kInf);
  EXPECT_EQ(LogprobsAt(none.data(), 4, 2, 2).logprob, -kInf);
  EXPECT_TRUE(LogprobsAt(none.data(), 4, 2, 2).top.empty());
}

TEST(TokenSamplerTest, TopListShorterThanTopNWhenFewTokensAreFinite) {
  const std::vector<float> logits = {-kInf, 1.0f, kNaN, 1.0f, -2.0f};
  TokenSampler s(Greedy(), 0, 5, {});
  auto c = s.Next(logits.data(), {}, 20);
  ASSERT_TRUE(c.ok());
  const std::vector<double> ref = NaiveLogSoftmax(logits);
  EXPECT_EQ(c->token, 1);
  EXPECT_NEAR(c->logprob, ref[1], 1e-6);
  ASSERT_EQ(c->top.size(), 3u);
  EXPECT_EQ(c->top[0].token, 1);
  EXPECT_EQ(c->top[1].token, 3);
  EXPECT_EQ(c->top[2].token, 4);
  EXPECT_NEAR(c->top[2].logprob, ref[4], 1e-6);
}

TEST(TokenSamplerTest, NaNLogitsCountAsNegativeInfinity) {
  std::vector<float> logits = {kNaN, 0.5f, kNaN, 0.25f, kInf};
  TokenSampler greedy(Greedy(), 0, 5, {});
  EXPECT_EQ(Pick(greedy, logits), 1);
  SamplingParams p;
  p.temperature = 1.0f;
  TokenSampler s(p, 1, 5, {});
  for (int i = 0; i < 500; ++i) {
    const int32_t t = Pick(s, logits);
    ASSERT_TRUE(t == 1 || t == 3) << t;
  }
}

TEST(TokenSamplerTest, NoFiniteLogitIsAnInternalError) {
  const std::vector<float> nan(8, kNaN);
  const std::vector<float> ninf(8, -kInf);
  SamplingParams p;
  p.temperature = 1.0f;
  TokenSampler s(p, 0, 8, {});
  for (const auto* l : {&nan, &ninf}) {
    auto c = s.Next(l->data(), {}, 3);
    EXPECT_EQ(c.status().code(), StatusCode::kInternal);
    EXPECT_NE(c.status().message().find("non-finite logits"), std::string::npos);
  }
  const std::vector<float> two = {1.0f, -kInf, 2.0f, -kInf, -kInf, -kInf, -kInf, -kInf};
  auto banned = s.Next(two.data(), {0, 2}, -1);
  EXPECT_EQ(banned.status().code(), StatusCode::kInternal);
  EXPECT_EQ(s.steps(), 0);
  EXPECT_EQ(Pick(s, two, {0}), 2);
  EXPECT_EQ(s.steps(), 1);
}

}  // namespace
// GreedyToken is what the GPU's row arg max computes for plain greedy steps: it must choose what
// Next chooses at temperature 0 (ties, NaN, infinities included), and Accept must leave the
// sampler as Next would.
TEST(GreedyTokenTest, EqualsNextAtTemperatureZero) {
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-4.0f, 4.0f);
  const float kInf = std::numeric_limits<float>::infinity();
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t V = 1 + static_cast<int64_t>(rng() % 5000);
    std::vector<float> logits(static_cast<size_t>(V));
    for (auto& x : logits) x = std::round(u(rng) * 4.0f) / 4.0f;  // coarse: many ties at the max
    if (trial % 3 == 0) logits[rng() % V] = std::nanf("");
    if (trial % 5 == 0) logits[rng() % V] = kInf;
    if (trial % 7 == 0) logits[rng() % V] = -kInf;
    TokenSampler sampler(SamplingParams{}, 0, V, {});
    auto next = sampler.Next(logits.data(), {}, -1);
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(GreedyToken(logits.data(), V), next->token) << "trial " << trial;
  }
  std::vector<float> none = {std::nanf(""), kInf, -kInf};
  EXPECT_EQ(GreedyToken(none.data(), 3), -1);
  TokenSampler a(SamplingParams{}, 0, 8, {}), b(SamplingParams{}, 0, 8, {});
  std::vector<float> logits = {0, 1, 5, 2, 5, 0, 0, 0};
  ASSERT_EQ(a.Next(logits.data(), {}, -1)->token, 2);
  b.Accept(2);
  EXPECT_EQ(a.steps(), b.steps());
}

}  // namespace mq::serve
