// mq-engine quantize for a Vision Mamba model (config.json model_type "vim"): calibration and
// evaluation on image sets instead of texts; the report carries float and quantized top-1 accuracy,
// top-1 agreement and the mean KL.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "quant/job_spec.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#include "vim/vim_config.h"
#include "vim/vim_quantizer.h"

namespace mq::tools {
namespace {

int RunQuantizeVim(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(
      args, {"json", "quiet", "no-klt-r1", "no-klt-r5", "no-smooth-s5", "no-online-r2", "no-smooth-s2", "no-smooth-s4",
             "no-smooth-conv", "r1-layer0"},
      {"model", "preset", "bits", "scope", "calib", "calib-prefix", "samples", "seed", "out", "eval", "eval-prefix", "act",
       "act-percentile", "weight-clip", "state-granularity", "device"});
  if (!cl.ok()) return ReportError(cl.status());
  VimQuantizeOptions o;
  auto model = cl->Require("model");
  auto out = cl->Require("out");
  auto calib = cl->Require("calib");
  auto samples = cl->GetInt("samples", 0, 0, kMaxVimCalibrationImages);
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  for (const Status& s : {model.status(), out.status(), calib.status(), samples.status(), seed.status()})
    if (!s.ok()) return ReportError(s);
  const std::string device = cl->Get("device").value_or("auto");
  if (device == "cuda") return ReportError(UnimplementedError("quantize --device cuda: Vim jobs run on the CPU for now"));
  if (device != "auto" && device != "cpu") return ReportError(InvalidArgumentError("--device must be auto, cpu or cuda"));
  o.model_dir = *model;
  o.output_dir = *out;
  o.calib_path = *calib;
  o.calib_prefix = cl->Get("calib-prefix").value_or("");
  o.num_samples = *samples;
  o.seed = static_cast<uint64_t>(*seed);
  o.eval_path = cl->Get("eval").value_or("");
  o.eval_prefix = cl->Get("eval-prefix").value_or("");
  o.preset = cl->Get("preset").value_or("mambaquant");
  o.bits = cl->Get("bits").value_or("w8a8");
  o.scope = cl->Get("scope").value_or("linear");
  o.act_granularity = cl->Get("act").value_or("per_token");
  o.weight_clip = cl->Get("weight-clip").value_or(o.weight_clip);
  auto percentile = cl->GetDouble("act-percentile", o.act_percentile);
  if (!percentile.ok()) return ReportError(percentile.status());
  o.act_percentile = *percentile;
  o.klt_r1 = !cl->Has("no-klt-r1");
  o.klt_r5 = !cl->Has("no-klt-r5");
  o.smooth_s5 = !cl->Has("no-smooth-s5");
  o.online_r2 = !cl->Has("no-online-r2");
  o.smooth_s2 = !cl->Has("no-smooth-s2");
  o.r1_cov_all_layers = !cl->Has("r1-layer0");
  // Scope full (the language command's flags): S4 + R4 at h·C, S3 at the conv input, h scales.
  o.smooth_s4 = !cl->Has("no-smooth-s4");
  o.smooth_conv = !cl->Has("no-smooth-conv");
  o.state_granularity = cl->Get("state-granularity").value_or(o.state_granularity);
  if (Status st = quant::CheckStateGranularityScope(cl->Has("state-granularity"), o.scope); !st.ok())
    return ReportError(st);
  const bool json_out = cl->Has("json");
  const bool quiet = cl->Has("quiet") || json_out;
  auto result = QuantizeVimModel(o, [&](const quant::Progress& p) {
    if (!quiet) std::fprintf(stderr, "[%-9s %5.1f%%] %s\n", quant::StageName(p.stage), 100.0 * p.fraction, p.message.c_str());
    return true;
  });
  if (!result.ok()) return ReportError(result.status());
  const nlohmann::json report = nlohmann::json::parse(result->report_json);
  if (json_out) {
    std::printf("%s\n", report.dump().c_str());
    return 0;
  }
  std::printf("wrote        %s\n", result->output_dir.c_str());
  std::printf("preset       %s %s (%s activations), Vim\n", o.preset.c_str(), o.bits.c_str(), o.act_granularity.c_str());
  std::printf("transforms   %s\n", report["transforms"].dump().c_str());
  if (!report["evaluation"].is_null()) {
    const auto& e = report["evaluation"];
    if (!e["float_accuracy"].is_null())
      std::printf("accuracy     float %.4f  quantized %.4f  on %lld images\n", e["float_accuracy"].get<double>(),
                  e["quantized_accuracy"].get<double>(), static_cast<long long>(e["count"].get<int64_t>()));
    std::printf("agreement    %.4f top-1, mean KL %.6f nats\n", e["top1_agreement"].get<double>(), e["mean_kl"].get<double>());
  }
  std::printf("time         %s\n", report["timings_seconds"].dump().c_str());
  return 0;
}

}  // namespace

int MaybeRunQuantizeVimCommand(const std::vector<std::string>& args) {
  for (size_t i = 0; i + 1 < args.size(); ++i)
    if (args[i] == "--model")
      return IsVimConfigFile((std::filesystem::path(args[i + 1]) / "config.json").string()) ? RunQuantizeVim(args) : -1;
  return -1;
}

}  // namespace mq::tools
