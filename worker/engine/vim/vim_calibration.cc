#include "vim/vim_calibration.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <cblas.h>

#include "vim/vim_forward.h"

namespace mq {
namespace {

// Images per calibration pass.
constexpr int64_t kImagesPerPass = 32;

class StatsObserver : public VimObserver {
 public:
  StatsObserver(const VimWeights& w, const VimCalibrationRequest& r, VimCalibrationStats* s)
      : w_(w), request_(r), stats_(s) {}
  bool Wants(VimSite site) const override { return request_.sites.count(site) > 0; }

  void Observe(int layer, VimSite site, const float* x, int64_t rows, int64_t cols) override {
    std::vector<float> rotated;
    if (site == VimSite::kOutProjInput && request_.out_proj_after_transform) {
      const auto& t = w_.layers[static_cast<size_t>(layer)].mixer.out_proj.input_transform;
      if (t) {
        rotated.assign(x, x + rows * cols);
        t->ApplyRows(rotated.data(), rows);
        x = rotated.data();
      }
    }
    quant::SiteStats& s = stats_->mutable_sites()[{layer, site}];
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
      if (request_.keep_row_absmax) s.row_absmax.push_back(row_max);
    }
    if (cov) {
      // Σ xᵀx in float64, as the language path accumulates it (SiteStats::SecondMoment reads the
      // upper triangle).
      std::vector<double> xd(x, x + rows * cols);
      cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(cols), static_cast<int>(rows), 1.0,
                  xd.data(), static_cast<int>(cols), 1.0, s.moment.data(), static_cast<int>(cols));
    }
    s.rows += rows;
  }

 private:
  const VimWeights& w_;
  const VimCalibrationRequest& request_;
  VimCalibrationStats* stats_;
};

}  // namespace

const quant::SiteStats* VimCalibrationStats::Find(int layer, VimSite site) const {
  auto it = sites_.find({layer, site});
  return it == sites_.end() ? nullptr : &it->second;
}

StatusOr<VimCalibrationStats> CalibrateVim(const VimWeights& w, const float* images, int64_t count,
                                           const VimCalibrationRequest& request,
                                           const std::function<bool(int64_t, int64_t)>& progress) {
  if (count < 1) return InvalidArgumentError("calibration needs at least one image");
  VimCalibrationStats stats;
  StatsObserver observer(w, request, &stats);
  const int64_t px = w.config.image_numel();
  std::vector<float> logits;
  for (int64_t b0 = 0; b0 < count; b0 += kImagesPerPass) {
    const int64_t nb = std::min(kImagesPerPass, count - b0);
    logits.resize(static_cast<size_t>(nb * w.config.num_classes));
    MQ_RETURN_IF_ERROR(VimForward(w, images + b0 * px, nb, logits.data(), &observer));
    if (progress && !progress(b0 + nb, count)) return CancelledError("calibration cancelled");
  }
  return stats;
}

}  // namespace mq
