// Calibration of a Vim model on images: run the (float or transformed) model over a set of
// normalized images and collect, per (layer, VimSite), the statistics the language path's
// transforms use (quant::SiteStats: per-channel abs-max, the float64 second moment, per-token
// maxima for percentile-clipped static scales).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <set>
#include <utility>

#include "quant/calibration.h"
#include "util/status.h"
#include "vim/vim_activation_site.h"
#include "vim/vim_weights.h"

namespace mq {

struct VimCalibrationRequest {
  std::set<VimSite> sites;             // sites to observe
  std::set<VimSite> covariance_sites;  // of those, which also accumulate x xᵀ
  bool keep_row_absmax = false;        // per-token maxima (static activation scales)
  // Per-token maxima of out_proj's input as its quantizer sees it, i.e. after the online rotation.
  bool out_proj_after_transform = false;
};

class VimCalibrationStats {
 public:
  const quant::SiteStats* Find(int layer, VimSite site) const;
  std::map<std::pair<int, VimSite>, quant::SiteStats>& mutable_sites() { return sites_; }

 private:
  std::map<std::pair<int, VimSite>, quant::SiteStats> sites_;
};

// Runs `count` images ([count, C, H, W]) through VimForward in passes and hands the requested
// activations to the statistics. `progress(done, total)` returning false cancels.
StatusOr<VimCalibrationStats> CalibrateVim(const VimWeights& w, const float* images, int64_t count,
                                           const VimCalibrationRequest& request,
                                           const std::function<bool(int64_t, int64_t)>& progress = nullptr);

}  // namespace mq
