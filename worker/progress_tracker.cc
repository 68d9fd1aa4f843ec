#include "progress_tracker.h"

#include <algorithm>

namespace mq::worker {
namespace {

using mambaquant::v1::Stage;

// Order of execution, with relative weights.
struct StageWeight {
  Stage stage;
  double weight;
};
constexpr StageWeight kStages[] = {
    {mambaquant::v1::STAGE_FETCH, 0.05},     {mambaquant::v1::STAGE_LOAD, 0.05},
    {mambaquant::v1::STAGE_CALIBRATE, 0.30}, {mambaquant::v1::STAGE_TRANSFORM, 0.15},
    {mambaquant::v1::STAGE_QUANTIZE, 0.10},  {mambaquant::v1::STAGE_EVALUATE, 0.25},
    {mambaquant::v1::STAGE_EXPORT, 0.05},    {mambaquant::v1::STAGE_UPLOAD, 0.05},
};

}  // namespace

void ProgressTracker::Update(Stage stage, double fraction) {
  fraction = std::clamp(fraction, 0.0, 1.0);
  double total = 0, before = 0, weight = 0;
  bool found = false;
  for (const auto& s : kStages) {
    if (s.stage == mambaquant::v1::STAGE_EVALUATE && !has_eval_) continue;
    total += s.weight;
    if (s.stage == stage) {
      found = true;
      weight = s.weight;
    } else if (!found) {
      before += s.weight;
    }
  }
  if (!found) return;
  overall_ = std::max(overall_, (before + weight * fraction) / total);
}

double ProgressTracker::EtaSeconds(absl::Time now) const {
  if (overall_ < 0.02) return -1;
  if (overall_ >= 1) return 0;
  double elapsed = absl::ToDoubleSeconds(now - start_);
  return elapsed * (1 - overall_) / overall_;
}

}  // namespace mq::worker
