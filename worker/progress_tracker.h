// Turns per-stage progress into whole-job progress and an ETA. Stages carry fixed weights (their
// typical share of a job's time); the ETA extrapolates the elapsed time over the whole-job
// fraction, which is crude early on and good once a few stages are done.
#pragma once

#include "absl/time/time.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::worker {

class ProgressTracker {
 public:
  explicit ProgressTracker(absl::Time start, bool has_eval) : start_(start), has_eval_(has_eval) {}

  // Records progress `fraction` (0..1) within `stage`.
  void Update(mambaquant::v1::Stage stage, double fraction);
  // Whole-job progress, 0..1, never decreasing.
  double fraction() const { return overall_; }
  // Seconds left, or -1 while too little is known.
  double EtaSeconds(absl::Time now) const;

 private:
  absl::Time start_;
  bool has_eval_;
  double overall_ = 0;
};

}  // namespace mq::worker
