// A JobExecutor for tests: walks the engine's stages with configurable timing, honours
// cancellation through the progress callback, optionally fails, and writes a small result.
// Never linked into the binaries.
#pragma once

#include <atomic>
#include <string>

#include "job_executor.h"

namespace mq::test {

class FakeJobExecutor : public worker::JobExecutor {
 public:
  absl::Duration step = absl::Milliseconds(20);  // per progress call
  int steps_per_stage = 5;
  std::string fail_with;                         // non-empty: fail in CALIBRATE with this message ({calib}, {output}: the paths)
  bool run_until_cancelled = false;              // loop in CALIBRATE until the callback says stop
  bool result_fails_model_check = false;         // write a config.json the commit's model check refuses

  std::atomic<int> executions{0};
  std::atomic<bool> saw_cancel{false};

  absl::StatusOr<worker::ExecutionResult> Execute(const worker::ExecutionRequest& request,
                                                  const worker::ExecutionProgressFn& progress) override;
};

}  // namespace mq::test
