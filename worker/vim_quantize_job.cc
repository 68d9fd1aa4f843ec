#include "vim_quantize_job.h"

#include "absl/strings/str_replace.h"

#include "report_paths.h"

#include <filesystem>

#include "engine_stage.h"
#include "inference_request.h"
#include "quant_spec_proto.h"
#include "vim/vim_config.h"
#include "vim/vim_quantizer.h"

namespace mq::worker {

bool IsVimJob(const ExecutionRequest& request) {
  return IsVimConfigFile((std::filesystem::path(request.model_dir) / "config.json").string());
}

absl::StatusOr<ExecutionResult> RunVimQuantizeJob(const ExecutionRequest& request, const ExecutionProgressFn& progress) {
  // The one adapter (common/quant_spec_proto.h), then the fields a Vim job shares with a text job.
  auto options = QuantizeOptionsFromProto(request.spec, quant::JobModel::kVim);
  if (!options.ok()) return options.status();
  const quant::QuantizeOptions& q = *options;
  VimQuantizeOptions o;
  o.model_dir = request.model_dir;
  o.output_dir = request.output_dir;
  // Image datasets hold `images` (and `labels`) without a prefix (docs/api.md).
  o.calib_path = request.calib_path;
  o.eval_path = request.eval_path;
  o.preset = q.preset;
  o.bits = q.bits;
  o.scope = q.scope;
  o.act_granularity = q.act_granularity;
  // The spec's default sample count is the text path's; the engine bounds it by the set's size.
  o.num_samples = q.num_samples;
  o.seed = q.seed;
  o.klt_r1 = q.klt_r1;
  o.klt_r5 = q.klt_r5;
  o.smooth_s5 = q.smooth_s5;
  o.online_r2 = q.online_r2;
  o.smooth_s2 = q.smooth_s2;
  o.smooth_s4 = q.smooth_s4;
  o.smooth_conv = q.smooth_conv;
  o.state_granularity = q.state_granularity;
  o.r1_cov_all_layers = q.r1_cov_all_layers;
  o.act_percentile = q.act_percentile;
  o.weight_clip = q.weight_clip;
  auto result = QuantizeVimModel(o, [&](const quant::Progress& p) {
    return progress(ExecutionProgress{ToProtoStage(p.stage), p.fraction, p.message});
  });
  if (!result.ok()) {
    // The engine names the files it read: the worker's cache paths of the datasets. Say which
    // dataset of the job it was.
    absl::Status st = ToAbslStatus(result.status());
    std::vector<std::pair<std::string, std::string>> names;
    if (!request.calib_path.empty()) names.emplace_back(request.calib_path, "spec.calib_dataset " + request.spec.calib_dataset());
    if (!request.eval_path.empty()) names.emplace_back(request.eval_path, "spec.eval_dataset " + request.spec.eval_dataset());
    return absl::Status(st.code(), absl::StrReplaceAll(st.message(), names));
  }
  auto report = FinalizeReport(request, result->report_json);
  if (!report.ok()) return report.status();
  return ExecutionResult{*std::move(report)};
}

}  // namespace mq::worker
