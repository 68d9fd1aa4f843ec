#include "fake_job_executor.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "file_util.h"

namespace mq::test {

using mambaquant::v1::Stage;

absl::StatusOr<worker::ExecutionResult> FakeJobExecutor::Execute(const worker::ExecutionRequest& request,
                                                                 const worker::ExecutionProgressFn& progress) {
  ++executions;
  for (Stage stage : {mambaquant::v1::STAGE_LOAD, mambaquant::v1::STAGE_CALIBRATE, mambaquant::v1::STAGE_TRANSFORM,
                      mambaquant::v1::STAGE_QUANTIZE, mambaquant::v1::STAGE_EXPORT}) {
    for (int i = 0; i <= steps_per_stage || (run_until_cancelled && stage == mambaquant::v1::STAGE_CALIBRATE); ++i) {
      double f = std::min(1.0, static_cast<double>(i) / steps_per_stage);
      if (!progress({stage, f, absl::StrCat(mambaquant::v1::Stage_Name(stage), " step ", i)})) {
        saw_cancel = true;
        return absl::CancelledError("cancelled");
      }
      if (stage == mambaquant::v1::STAGE_CALIBRATE && !fail_with.empty() && i == 2) {
        return absl::InvalidArgumentError(fail_with);
      }
      absl::SleepFor(step);
    }
  }
  absl::Status s = MakeDirs(request.output_dir);
  if (s.ok()) s = WriteFileAtomic(JoinPath(request.output_dir, "config.json"), "{\"model_type\": \"mamba\"}");
  if (s.ok()) s = WriteFileAtomic(JoinPath(request.output_dir, "tokenizer.json"), "{}");
  // A minimal valid safetensors file: empty header object.
  std::string st("\x02\x00\x00\x00\x00\x00\x00\x00{}", 10);
  if (s.ok()) s = WriteFileAtomic(JoinPath(request.output_dir, "model.safetensors"), st);
  if (!s.ok()) return s;
  return worker::ExecutionResult{"{\"fake\": true, \"calib_path_set\": " +
                                 std::string(request.calib_path.empty() ? "false" : "true") + "}"};
}

}  // namespace mq::test
