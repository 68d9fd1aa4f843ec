// Latency statistics of mq-loadgen: exact percentiles of recorded samples.
#pragma once

#include <cstddef>
#include <vector>

namespace mq::bench {

struct LatencySummary {
  size_t count = 0;  // 0: no samples, every other field 0
  double mean = 0;
  double min = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
  double max = 0;
};

// The p-th percentile (0 <= p <= 100) of ascending `sorted` samples, interpolated linearly between
// the two closest ranks (rank p/100 × (n−1), as numpy.percentile's default): p = 0 is the minimum,
// 100 the maximum, 50 of an even count the mean of the middle two. 0 for no samples; p outside
// [0, 100] is clamped.
double Percentile(const std::vector<double>& sorted, double p);

// Samples of one quantity (milliseconds in mq-loadgen), collected per thread and merged.
class LatencySamples {
 public:
  void Add(double value) { values_.push_back(value); }
  void Merge(const LatencySamples& other) { values_.insert(values_.end(), other.values_.begin(), other.values_.end()); }
  void Reserve(size_t n) { values_.reserve(n); }
  size_t size() const { return values_.size(); }
  const std::vector<double>& values() const { return values_; }
  // Sorts a copy; the mean is summed in ascending order (no dependence on arrival order).
  LatencySummary Summarize() const;

 private:
  std::vector<double> values_;
};

}  // namespace mq::bench
