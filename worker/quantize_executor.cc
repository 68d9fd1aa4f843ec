#include "quantize_executor.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine_stage.h"
#include "inference_request.h"
#include "log.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "quant_spec_proto.h"
#include "report_paths.h"
#include "vim_quantize_job.h"

namespace mq::worker {

absl::StatusOr<ExecutionResult> QuantizeExecutor::Execute(const ExecutionRequest& request,
                                                          const ExecutionProgressFn& progress) {
  // A Vision Mamba model: its own pipeline, on image datasets.
  if (IsVimJob(request)) return RunVimQuantizeJob(request, progress);
  // The one adapter (common/quant_spec_proto.h): the server ran the same check at submission, so
  // a refusal here means a server of another version; the worker does not trust it either way.
  auto options = QuantizeOptionsFromProto(request.spec);
  if (!options.ok()) return options.status();
  quant::QuantizeOptions o = *std::move(options);
  o.model_dir = request.model_dir;
  o.output_dir = request.output_dir;
  o.calib_text_path = request.calib_path;
  o.eval_text_path = request.eval_path;
  // The calibration takes exactly num_samples windows of seq_len tokens or fails (text too short).
  const int64_t calibration_tokens = int64_t{o.num_samples} * o.seq_len;
  // The device: the plugin's GPU accelerator when it runs every step of this job, else the CPU.
  std::unique_ptr<quant::QuantAccelerator> accel;
  std::string why_not_gpu;
  if (plugin_ != nullptr) {
    auto gpu = plugin_->open_quant(o, &why_not_gpu);
    if (!gpu.ok()) return ToAbslStatus(gpu.status());
    accel = std::move(*gpu);
  }
  const bool fell_back = plugin_ != nullptr && accel == nullptr;  // a GPU worker, a job the GPU cannot run
  if (fell_back && why_not_gpu.empty()) why_not_gpu = "the CUDA backend declined the job";
  if (accel == nullptr) accel = std::make_unique<quant::CpuQuantAccelerator>();
  if (fell_back) {
    mq::Log(mq::LogLevel::kWarning, "job runs on the CPU, not the GPU").Kv("model", o.model_dir).Kv("reason", why_not_gpu);
    if (!progress(ExecutionProgress{mambaquant::v1::STAGE_LOAD, 0.0, "running on the CPU: " + why_not_gpu}))
      return absl::CancelledError("cancelled");
  }
  auto result = quant::QuantizeModel(o, [&](const quant::Progress& p) {
    return progress(ExecutionProgress{ToProtoStage(p.stage), p.fraction, p.message});
  }, accel.get());
  if (!result.ok()) return ToAbslStatus(result.status());
  // The GPU's refusal goes into the report too (the copy inside the export included).
  nlohmann::json extra = nlohmann::json::object();
  if (fell_back) extra["device_note"] = "GPU not used: " + why_not_gpu;
  auto report = FinalizeReport(request, result->report_json, extra);
  if (!report.ok()) return report.status();
  return ExecutionResult{*std::move(report), calibration_tokens};
}

}  // namespace mq::worker
