// Calibration: run the float model over seeded windows of a calibration text and collect, per
// layer and site, the per-channel abs-max, the float64 second-moment matrix and per-token
// abs-max samples (for percentile-clipped static scales).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <utility>
#include <vector>

#include "model/activation_site.h"
#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq::quant {

struct SiteStats {
  int64_t channels = 0;
  int64_t rows = 0;                 // tokens (or state rows) observed
  std::vector<float> absmax;        // [channels] max |x_j|
  std::vector<double> sum;          // [channels] Σ x_j
  std::vector<double> moment;       // [channels²] Σ x xᵀ (only when covariance was requested)
  std::vector<float> row_absmax;    // max |x_t| of each observed row (per-token maxima)

  // E[x xᵀ] (uncentred: quantization error follows E[x_j²], not the variance alone).
  std::vector<double> SecondMoment() const;
  // p-th percentile (0..100) of the per-row maxima: the clipping range of a static scale.
  float RowAbsmaxPercentile(double p) const;
};

struct CalibrationRequest {
  std::set<ActivationSite> sites;            // sites to observe
  std::set<ActivationSite> covariance_sites; // of those, which also accumulate x xᵀ
  bool keep_row_absmax = false;
};

using SiteKey = std::pair<int, ActivationSite>;  // (layer, site)

class CalibrationStats {
 public:
  const SiteStats* Find(int layer, ActivationSite site) const;
  std::map<SiteKey, SiteStats>& mutable_sites() { return sites_; }
  const std::map<SiteKey, SiteStats>& sites() const { return sites_; }

 private:
  std::map<SiteKey, SiteStats> sites_;
};

// Draws `num_samples` window starts in [0, total − seq_len] from std::mt19937_64(seed) raw
// output (portable across standard libraries).
StatusOr<std::vector<int64_t>> SampleWindowStarts(int64_t total_tokens, int64_t seq_len, int64_t num_samples,
                                                  uint64_t seed);

// Runs the windows (starts into `tokens`, seq_len each) through the forward pass of `w`, handing
// every activation the observer wants to it; the LM head runs only when `final_norm` is asked for.
// `progress(done, total)` returning false cancels.
Status ObserveWindows(const MambaWeights& w, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts,
                      int64_t seq_len, ForwardObserver* observer,
                      const std::function<bool(int64_t, int64_t)>& progress = nullptr);

// Runs the windows through the float forward pass with an observer. `progress(done, total)`
// returning false cancels.
StatusOr<CalibrationStats> Calibrate(const MambaWeights& w, const std::vector<int32_t>& tokens,
                                     const std::vector<int64_t>& starts, int64_t seq_len,
                                     const CalibrationRequest& request,
                                     const std::function<bool(int64_t, int64_t)>& progress = nullptr);

}  // namespace mq::quant
