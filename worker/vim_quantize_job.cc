#include "vim_quantize_job.h"

#include <filesystem>

#include "engine_stage.h"
#include "vim/vim_config.h"
#include "vim/vim_quantizer.h"

namespace mq::worker {

bool IsVimJob(const ExecutionRequest& request) {
  return IsVimConfigFile((std::filesystem::path(request.model_dir) / "config.json").string());
}

absl::StatusOr<ExecutionResult> RunVimQuantizeJob(const ExecutionRequest& request, const ExecutionProgressFn& progress) {
  const auto& spec = request.spec;
  VimQuantizeOptions o;  // fields the spec does not carry keep the engine's defaults
  o.model_dir = request.model_dir;
  o.output_dir = request.output_dir;
  o.preset = spec.preset();
  o.bits = spec.bits();
  o.scope = spec.scope();
  if (!spec.act_granularity().empty()) o.act_granularity = spec.act_granularity();
  // Image datasets hold `images` (and `labels`) without a prefix (docs/api.md).
  o.calib_path = request.calib_path;
  o.eval_path = request.eval_path;
  // The spec's default sample count is the text path's; the engine bounds it by the set's size.
  o.num_samples = spec.num_samples();
  o.seed = spec.seed();
  if (spec.has_klt_r1()) o.klt_r1 = spec.klt_r1();
  if (spec.has_klt_r5()) o.klt_r5 = spec.klt_r5();
  if (spec.has_online_r2()) o.online_r2 = spec.online_r2();
  if (spec.has_smooth_s2()) o.smooth_s2 = spec.smooth_s2();
  if (spec.has_act_percentile()) o.act_percentile = spec.act_percentile();
  if (!spec.r1_covariance().empty()) o.r1_cov_all_layers = spec.r1_covariance() != "layer0";
  if (!spec.weight_clip().empty()) o.weight_clip = spec.weight_clip();
  auto result = QuantizeVimModel(o, [&](const quant::Progress& p) {
    return progress(ExecutionProgress{ToProtoStage(p.stage), p.fraction, p.message});
  });
  if (!result.ok()) return absl::Status(static_cast<absl::StatusCode>(result.status().code()), result.status().message());
  return ExecutionResult{result->report_json};
}

}  // namespace mq::worker
