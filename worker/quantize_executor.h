// The real JobExecutor: runs mq::quant::QuantizeModel from the engine library.
#pragma once

#include <string>
#include <utility>

#include "job_executor.h"

namespace mq::worker {

class QuantizeExecutor : public JobExecutor {
 public:
  // backend "cuda": each job runs on the GPU when this binary has the CUDA backend and the GPU can
  // run all of it, else on the CPU (quant::OpenQuantDevice "auto"); "cpu": always the CPU. mq-worker
  // is built without the CUDA backend today (worker/CMakeLists.txt says why), so jobs run on the CPU.
  explicit QuantizeExecutor(std::string backend) : backend_(std::move(backend)) {}
  absl::StatusOr<ExecutionResult> Execute(const ExecutionRequest& request, const ExecutionProgressFn& progress) override;

 private:
  std::string backend_;
};

}  // namespace mq::worker
