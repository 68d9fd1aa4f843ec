#include "quantize_executor.h"

#include <filesystem>
#include <fstream>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "engine_stage.h"
#include "log.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "vim_quantize_job.h"

namespace mq::worker {
namespace {

// mq::Status codes equal absl's numerically (both mirror gRPC's).
absl::Status ToAbsl(const Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

}  // namespace

absl::StatusOr<ExecutionResult> QuantizeExecutor::Execute(const ExecutionRequest& request,
                                                          const ExecutionProgressFn& progress) {
  // A Vision Mamba model: its own pipeline, on image datasets.
  if (IsVimJob(request)) return RunVimQuantizeJob(request, progress);
  const auto& spec = request.spec;
  quant::QuantizeOptions o;  // fields the spec does not carry keep the engine's defaults
  o.model_dir = request.model_dir;
  o.output_dir = request.output_dir;
  o.preset = spec.preset();
  o.bits = spec.bits();
  o.scope = spec.scope();
  o.act_granularity = spec.act_granularity();
  o.calib_text_path = request.calib_path;
  o.num_samples = spec.num_samples();
  o.seq_len = spec.seq_len();
  // The calibration takes exactly num_samples windows of seq_len tokens or fails (text too short).
  const int64_t calibration_tokens = int64_t{spec.num_samples()} * spec.seq_len();
  o.seed = spec.seed();
  o.eval_text_path = request.eval_path;
  o.eval_window = spec.eval_window();
  if (spec.has_klt_r1()) o.klt_r1 = spec.klt_r1();
  if (spec.has_klt_r5()) o.klt_r5 = spec.klt_r5();
  if (spec.has_online_r2()) o.online_r2 = spec.online_r2();
  if (spec.has_smooth_s2()) o.smooth_s2 = spec.smooth_s2();
  if (spec.has_smooth_s4()) o.smooth_s4 = spec.smooth_s4();
  if (spec.has_act_percentile()) o.act_percentile = spec.act_percentile();
  if (spec.has_quantize_lm_head()) o.quantize_lm_head = spec.quantize_lm_head();
  if (spec.has_tolerable_loss_percent()) o.tolerable_loss_percent = spec.tolerable_loss_percent();
  if (!spec.r1_covariance().empty()) o.r1_cov_all_layers = spec.r1_covariance() != "layer0";
  if (!spec.weight_clip().empty()) o.weight_clip = spec.weight_clip();
  if (!spec.state_granularity().empty()) o.state_granularity = spec.state_granularity();
  // The device: the plugin's GPU accelerator when it runs every step of this job, else the CPU.
  std::unique_ptr<quant::QuantAccelerator> accel;
  std::string why_not_gpu;
  if (plugin_ != nullptr) {
    auto gpu = plugin_->open_quant(o, &why_not_gpu);
    if (!gpu.ok()) return ToAbsl(gpu.status());
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
  if (!result.ok()) return ToAbsl(result.status());
  if (!fell_back) return ExecutionResult{result->report_json, calibration_tokens};
  // The reason goes into the report too, the copy inside the export included.
  auto report = nlohmann::json::parse(result->report_json, nullptr, false);
  if (report.is_discarded() || !report.is_object()) return ExecutionResult{result->report_json, calibration_tokens};
  report["device_note"] = "GPU not used: " + why_not_gpu;
  std::ofstream((std::filesystem::path(result->output_dir) / "quant_report.json").string(), std::ios::trunc)
      << report.dump(2) << "\n";
  return ExecutionResult{report.dump(), calibration_tokens};
}

}  // namespace mq::worker
