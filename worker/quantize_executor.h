// The real JobExecutor: runs mq::quant::QuantizeModel from the engine library.
#pragma once

#include "job_executor.h"

namespace mq::worker {

class QuantizeExecutor : public JobExecutor {
 public:
  absl::StatusOr<ExecutionResult> Execute(const ExecutionRequest& request, const ExecutionProgressFn& progress) override;
};

}  // namespace mq::worker
