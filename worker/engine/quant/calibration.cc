#include "quant/calibration.h"

#include <algorithm>
#include <cmath>
#include <random>

#include <cblas.h>

#include "cpu/mamba_forward.h"

namespace mq::quant {
namespace {

// Windows per forward pass during calibration.
constexpr int64_t kWindowsPerBatch = 8;

class StatsObserver : public ForwardObserver {
 public:
  StatsObserver(const CalibrationRequest& request, CalibrationStats* stats) : request_(request), stats_(stats) {}

  bool Wants(ActivationSite site) const override { return request_.sites.count(site) > 0; }

  void Observe(int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) override {
    SiteStats& s = stats_->mutable_sites()[{layer, site}];
    const bool cov = request_.covariance_sites.count(site) > 0;
    if (s.channels == 0) {
      s.channels = cols;
      s.absmax.assign(static_cast<size_t>(cols), 0.0f);
      s.sum.assign(static_cast<size_t>(cols), 0.0);
      if (cov) s.moment.assign(static_cast<size_t>(cols * cols), 0.0);
    }
    for (int64_t r = 0; r < rows; ++r) {
      const float* xr = x + r * cols;
      float row_max = 0.0f;
      for (int64_t c = 0; c < cols; ++c) {
        const float a = std::fabs(xr[c]);
        s.absmax[c] = std::max(s.absmax[c], a);
        s.sum[c] += xr[c];
        row_max = std::max(row_max, a);
      }
      // Per-step state rows would be E per token: percentiles are only kept for token sites.
      if (request_.keep_row_absmax && site != ActivationSite::kSsmState) s.row_absmax.push_back(row_max);
    }
    if (cov) {
      // Σ xᵀx in float64 (dsyrk on a widened copy): float accumulation over 10^5 tokens would
      // lose the small eigenvalues the KLT depends on.
      std::vector<double> xd(x, x + rows * cols);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols), static_cast<int>(rows), 1.0,
                  xd.data(), static_cast<int>(cols), 1.0, s.moment.data(), static_cast<int>(cols));
    }
    s.rows += rows;
  }

 private:
  const CalibrationRequest& request_;
  CalibrationStats* stats_;
};

}  // namespace

std::vector<double> SiteStats::SecondMoment() const {
  std::vector<double> m(moment.size());
  const double inv = rows > 0 ? 1.0 / static_cast<double>(rows) : 0.0;
  for (int64_t i = 0; i < channels; ++i)
    for (int64_t j = i; j < channels; ++j) {
      const double v = moment[i * channels + j] * inv;  // dsyrk filled the upper triangle
      m[i * channels + j] = v;
      m[j * channels + i] = v;
    }
  return m;
}

float SiteStats::RowAbsmaxPercentile(double p) const {
  if (row_absmax.empty()) return 0.0f;
  std::vector<float> v = row_absmax;
  const double pos = std::clamp(p, 0.0, 100.0) / 100.0 * static_cast<double>(v.size() - 1);
  const size_t k = static_cast<size_t>(std::llround(pos));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

const SiteStats* CalibrationStats::Find(int layer, ActivationSite site) const {
  auto it = sites_.find({layer, site});
  return it == sites_.end() ? nullptr : &it->second;
}

StatusOr<std::vector<int64_t>> SampleWindowStarts(int64_t total_tokens, int64_t seq_len, int64_t num_samples,
                                                  uint64_t seed) {
  if (seq_len < 1 || num_samples < 1) return InvalidArgumentError("calibration needs samples ≥ 1 and seq_len ≥ 1");
  if (total_tokens < seq_len)
    return InvalidArgumentError("calibration text has " + std::to_string(total_tokens) +
                                " tokens, fewer than one window of " + std::to_string(seq_len));
  std::mt19937_64 rng(seed);
  const uint64_t range = static_cast<uint64_t>(total_tokens - seq_len + 1);
  std::vector<int64_t> starts(static_cast<size_t>(num_samples));
  for (int64_t& s : starts) s = static_cast<int64_t>(rng() % range);
  return starts;
}

Status ObserveWindows(const MambaWeights& w, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts,
                      int64_t seq_len, ForwardObserver* observer,
                      const std::function<bool(int64_t, int64_t)>& progress) {
  const int64_t total = static_cast<int64_t>(starts.size());
  for (int64_t i0 = 0; i0 < total; i0 += kWindowsPerBatch) {
    const int64_t nb = std::min(kWindowsPerBatch, total - i0);
    std::vector<int32_t> ids(static_cast<size_t>(nb * seq_len));
    for (int64_t b = 0; b < nb; ++b) {
      if (starts[i0 + b] < 0 || starts[i0 + b] + seq_len > static_cast<int64_t>(tokens.size()))
        return InvalidArgumentError("calibration window outside the token stream");
      std::copy_n(tokens.begin() + starts[i0 + b], seq_len, ids.begin() + b * seq_len);
    }
    cpu::MambaState state = cpu::MambaState::Zeros(w.config, nb);
    cpu::ForwardOptions fo;
    fo.skip_logits = !observer->Wants(ActivationSite::kFinalNorm);
    fo.observer = observer;
    MQ_RETURN_IF_ERROR(cpu::MambaForward(w, ids.data(), nb, seq_len, &state, nullptr, fo));
    if (progress && !progress(i0 + nb, total)) return CancelledError("calibration cancelled");
  }
  return OkStatus();
}

StatusOr<CalibrationStats> Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                     const std::vector<int64_t>& starts, int64_t seq_len,
                                     const CalibrationRequest& request,
                                     const std::function<bool(int64_t, int64_t)>& progress) {
  CalibrationStats stats;
  StatsObserver observer(request, &stats);
  MQ_RETURN_IF_ERROR(ObserveWindows(w, tokens, starts, seq_len, &observer, progress));
  return stats;
}

}  // namespace mq::quant
