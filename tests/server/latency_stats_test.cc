// mq-loadgen's statistics: percentiles by linear interpolation between closest ranks (numpy's
// default), mean, extremes, merging per-stream samples.
#include "latency_stats.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>

namespace mq::bench {
namespace {

TEST(PercentileTest, EmptyIsZero) {
  EXPECT_EQ(Percentile({}, 50), 0);
  LatencySummary s = LatencySamples().Summarize();
  EXPECT_EQ(s.count, 0u);
  EXPECT_EQ(s.mean, 0);
  EXPECT_EQ(s.p99, 0);
}

TEST(PercentileTest, OneSampleIsEveryPercentile) {
  const std::vector<double> v = {7.5};
  for (double p : {0.0, 1.0, 50.0, 90.0, 99.0, 100.0}) EXPECT_EQ(Percentile(v, p), 7.5) << p;
}

TEST(PercentileTest, InterpolatesBetweenClosestRanks) {
  // numpy.percentile([1, 2, 3, 4], q): 50 -> 2.5, 90 -> 3.7, 99 -> 3.97, 25 -> 1.75.
  const std::vector<double> v = {1, 2, 3, 4};
  EXPECT_DOUBLE_EQ(Percentile(v, 50), 2.5);
  EXPECT_DOUBLE_EQ(Percentile(v, 90), 3.7);
  EXPECT_DOUBLE_EQ(Percentile(v, 99), 3.97);
  EXPECT_DOUBLE_EQ(Percentile(v, 25), 1.75);
  EXPECT_DOUBLE_EQ(Percentile(v, 0), 1);
  EXPECT_DOUBLE_EQ(Percentile(v, 100), 4);
  // Odd count: the median is the middle sample.
  EXPECT_DOUBLE_EQ(Percentile({10, 20, 30}, 50), 20);
}

TEST(PercentileTest, OutOfRangePercentilesClamp) {
  const std::vector<double> v = {1, 2, 3};
  EXPECT_EQ(Percentile(v, -5), 1);
  EXPECT_EQ(Percentile(v, 250), 3);
}

TEST(PercentileTest, HundredSamplesMatchRanks) {
  std::vector<double> v(101);
  std::iota(v.begin(), v.end(), 0.0);  // 0..100: percentile p is p exactly
  for (double p : {1.0, 10.0, 50.0, 90.0, 99.0}) EXPECT_DOUBLE_EQ(Percentile(v, p), p);
}

TEST(LatencySamplesTest, SummarizeIgnoresArrivalOrder) {
  std::vector<double> values(1000);
  for (size_t i = 0; i < values.size(); ++i) values[i] = static_cast<double>(i + 1);  // 1..1000
  std::mt19937 rng(7);
  std::shuffle(values.begin(), values.end(), rng);
  LatencySamples s;
  for (double v : values) s.Add(v);
  LatencySummary sum = s.Summarize();
  EXPECT_EQ(sum.count, 1000u);
  EXPECT_DOUBLE_EQ(sum.mean, 500.5);
  EXPECT_DOUBLE_EQ(sum.min, 1);
  EXPECT_DOUBLE_EQ(sum.max, 1000);
  EXPECT_DOUBLE_EQ(sum.p50, 500.5);
  EXPECT_DOUBLE_EQ(sum.p90, 900.1);  // rank 0.9 × 999 = 899.1 -> 900 + 0.1
  EXPECT_DOUBLE_EQ(sum.p99, 990.01);
  // Summarize does not disturb the samples.
  EXPECT_EQ(s.values(), values);
}

TEST(LatencySamplesTest, MergeEqualsOneCollection) {
  LatencySamples a, b, both;
  for (int i = 0; i < 50; ++i) {
    a.Add(i * 1.5);
    both.Add(i * 1.5);
  }
  for (int i = 0; i < 30; ++i) {
    b.Add(100 - i * 0.25);
    both.Add(100 - i * 0.25);
  }
  a.Merge(b);
  LatencySummary merged = a.Summarize(), direct = both.Summarize();
  EXPECT_EQ(merged.count, 80u);
  EXPECT_DOUBLE_EQ(merged.mean, direct.mean);
  EXPECT_DOUBLE_EQ(merged.p50, direct.p50);
  EXPECT_DOUBLE_EQ(merged.p90, direct.p90);
  EXPECT_DOUBLE_EQ(merged.p99, direct.p99);
  EXPECT_DOUBLE_EQ(merged.min, 0);
  EXPECT_DOUBLE_EQ(merged.max, 100);
}

TEST(LatencySamplesTest, OutlierMovesTailNotMedian) {
  LatencySamples s;
  for (int i = 0; i < 99; ++i) s.Add(10);
  s.Add(1000);
  LatencySummary sum = s.Summarize();
  EXPECT_DOUBLE_EQ(sum.p50, 10);
  EXPECT_DOUBLE_EQ(sum.p90, 10);
  EXPECT_NEAR(sum.p99, 10 + 0.01 * 990, 1e-9);  // rank 98.01: 1% of the way to the outlier
  EXPECT_DOUBLE_EQ(sum.max, 1000);
  EXPECT_DOUBLE_EQ(sum.mean, (99 * 10 + 1000) / 100.0);
}

}  // namespace
}  // namespace mq::bench
