// What runs a job's numerical work. The worker process uses QuantizeExecutor (the engine's
// QuantizeModel); tests inject fakes to exercise the job lifecycle without the engine.
#pragma once

#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::worker {

struct ExecutionRequest {
  std::string model_dir;   // the float model, read only
  std::string output_dir;  // must not exist; created by the executor
  std::string calib_path;  // calibration text
  std::string eval_path;   // evaluation text, or empty
  mambaquant::v1::QuantSpec spec;  // validated and normalized by the server
};

struct ExecutionProgress {
  mambaquant::v1::Stage stage = mambaquant::v1::STAGE_UNSPECIFIED;
  double fraction = 0;  // within the stage, 0..1
  std::string message;
};

// Returns false to cancel; the executor then stops promptly with CANCELLED.
using ExecutionProgressFn = std::function<bool(const ExecutionProgress&)>;

struct ExecutionResult {
  std::string report_json;  // the quantization report (JSON object)
  // Tokens the calibration ran over (windows × tokens per window); 0 for jobs that calibrate on
  // something else (images).
  int64_t calibration_tokens = 0;
};

class JobExecutor {
 public:
  virtual ~JobExecutor() = default;
  virtual absl::StatusOr<ExecutionResult> Execute(const ExecutionRequest& request,
                                                  const ExecutionProgressFn& progress) = 0;
};

}  // namespace mq::worker
