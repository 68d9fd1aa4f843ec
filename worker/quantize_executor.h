// The real JobExecutor: runs mq::quant::QuantizeModel from the engine library.
#pragma once

#include "job_executor.h"
#include "serve/backend_plugin.h"

namespace mq::worker {

class QuantizeExecutor : public JobExecutor {
 public:
  // plugin: the worker's device backend (the CUDA plugin when --backend resolved to cuda), or
  // null for the CPU. With a plugin, each job runs on the GPU when it can run every step there
  // (plugin->open_quant, quant::OpenQuantDevice's "auto"), else on the CPU, and the reason is
  // logged, shown as the job's progress message and recorded in its report (`device_note`). The
  // report's `device` says where the arithmetic ran ("cuda (<GPU name>)" or "cpu").
  explicit QuantizeExecutor(const mq::serve::BackendPlugin* plugin) : plugin_(plugin) {}
  absl::StatusOr<ExecutionResult> Execute(const ExecutionRequest& request, const ExecutionProgressFn& progress) override;

 private:
  const mq::serve::BackendPlugin* plugin_;
};

}  // namespace mq::worker
