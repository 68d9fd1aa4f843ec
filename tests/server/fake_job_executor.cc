#include "fake_job_executor.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
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
        // "{calib}" and "{output}" stand for this job's local paths (as an engine error names them).
        std::string why = absl::StrReplaceAll(fail_with, {{"{calib}", request.calib_path}, {"{output}", request.output_dir}});
        return absl::InvalidArgumentError(why);
      }
      absl::SleepFor(step);
    }
  }
  absl::Status s = MakeDirs(request.output_dir);
  if (!s.ok()) return s;
  // The output is registered like any model, through the commit-time model check: the tiny
  // model's files make a model the check accepts.
  for (const char* name : {"config.json", "tokenizer.json", "model.safetensors"}) {
    std::error_code ec;
    std::filesystem::copy_file(std::string(MQ_SOURCE_DIR) + "/models/mamba-tiny/" + name,
                               JoinPath(request.output_dir, name), std::filesystem::copy_options::overwrite_existing, ec);
    if (ec) return absl::InternalError(absl::StrCat("fake executor: copying ", name, ": ", ec.message()));
  }
  if (result_fails_model_check) {
    std::ofstream(JoinPath(request.output_dir, "config.json"), std::ios::trunc) << "{\"model_type\": \"mamba\", \"d_model\": -1}";
  }
  return worker::ExecutionResult{"{\"fake\": true, \"calib_path_set\": " +
                                 std::string(request.calib_path.empty() ? "false" : "true") + "}"};
}

}  // namespace mq::test
