// mq-engine quantize: run a whole quantization job locally and print its report.
#include <cstdio>

#include <nlohmann/json.hpp>

#include "quant/job_spec.h"
#include "quant/quant_device.h"
#include "quant/quantize_pipeline.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {
namespace {

std::string Percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%+.3f%%", 100.0 * x);
  return buf;
}

}  // namespace

int RunQuantizeCommand(const std::vector<std::string>& args) {
  // A Vim model calibrates and evaluates on images.
  if (const int rc = MaybeRunQuantizeVimCommand(args); rc >= 0) return rc;
  auto cl = CommandLine::Parse(
      args, {"json", "no-klt-r1", "no-klt-r5", "no-smooth-s5", "no-online-r2", "no-smooth-s2", "no-smooth-s4", "no-smooth-conv", "r1-layer0", "quiet", "diagnostics",
             "quantize-lm-head"},
      {"model", "preset", "bits", "scope", "calib", "samples", "seq-len", "seed", "out", "eval", "window", "act",
       "act-percentile", "smooth-alpha", "weight-clip", "state-granularity", "device", "tolerable-loss",
       "w8-layers"});
  if (!cl.ok()) return ReportError(cl.status());
  quant::QuantizeOptions o;
  auto model = cl->Require("model");
  auto out = cl->Require("out");
  auto calib = cl->Require("calib");
  // Defaults are QuantizeOptions', limits the job spec's (quant/job_spec.h).
  using Limits = quant::JobSpecLimits;
  auto samples = cl->GetInt("samples", o.num_samples, Limits::kMinSamples, Limits::kMaxSamples);
  auto seq_len = cl->GetInt("seq-len", o.seq_len, Limits::kMinSeqLen, Limits::kMaxSeqLen);
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  auto window = cl->GetInt("window", o.eval_window, Limits::kMinEvalWindow, Limits::kMaxEvalWindow);
  for (const Status& s : {model.status(), out.status(), calib.status(), samples.status(), seq_len.status(),
                          seed.status(), window.status()})
    if (!s.ok()) return ReportError(s);
  o.model_dir = *model;
  o.output_dir = *out;
  o.calib_text_path = *calib;
  o.num_samples = static_cast<int>(*samples);
  o.seq_len = static_cast<int>(*seq_len);
  o.seed = static_cast<uint64_t>(*seed);
  o.eval_window = static_cast<int>(*window);
  o.preset = cl->Get("preset").value_or(o.preset);
  o.bits = cl->Get("bits").value_or(o.bits);
  o.scope = cl->Get("scope").value_or(o.scope);
  o.act_granularity = cl->Get("act").value_or(o.act_granularity);
  auto percentile = cl->GetDouble("act-percentile", o.act_percentile);
  auto alpha = cl->GetDouble("smooth-alpha", o.smooth_alpha);
  if (!percentile.ok()) return ReportError(percentile.status());
  if (!alpha.ok()) return ReportError(alpha.status());
  o.act_percentile = *percentile;
  o.smooth_alpha = *alpha;
  o.eval_text_path = cl->Get("eval").value_or("");
  o.weight_clip = cl->Get("weight-clip").value_or(o.weight_clip);
  o.state_granularity = cl->Get("state-granularity").value_or(o.state_granularity);
  if (Status st = quant::CheckStateGranularityScope(cl->Has("state-granularity"), o.scope); !st.ok())
    return ReportError(st);
  o.klt_r1 = !cl->Has("no-klt-r1");
  o.klt_r5 = !cl->Has("no-klt-r5");
  o.smooth_s5 = !cl->Has("no-smooth-s5");
  o.online_r2 = !cl->Has("no-online-r2");
  o.smooth_s2 = !cl->Has("no-smooth-s2");
  o.smooth_s4 = !cl->Has("no-smooth-s4");
  o.smooth_conv = !cl->Has("no-smooth-conv");
  o.diagnostics = cl->Has("diagnostics");
  if (cl->Has("tolerable-loss")) {
    auto budget = cl->GetDouble("tolerable-loss", 0.0);
    if (!budget.ok()) return ReportError(budget.status());
    o.tolerable_loss_percent = *budget;
    // A budget given must be one (0 would read as "not requested").
    if (Status s = quant::CheckTolerableLoss(o.tolerable_loss_percent); !s.ok()) return ReportError(s);
  }
  if (auto layers = cl->Get("w8-layers")) {
    auto parsed = quant::ParseLayerList(*layers);
    if (!parsed.ok()) return ReportError(parsed.status());
    o.w8_layers = *parsed;
  }
  o.r1_cov_all_layers = !cl->Has("r1-layer0");
  o.quantize_lm_head = cl->Has("quantize-lm-head");
  // The job spec's check, as mq-server runs it on a submitted job: refused before the device opens.
  if (Status s = quant::ValidateJobOptions(o); !s.ok()) return ReportError(s);

  const bool json_out = cl->Has("json");
  const bool quiet = cl->Has("quiet") || json_out;
  const std::string device = cl->Get("device").value_or("auto");
  std::string why_not_gpu;
  auto accel = quant::OpenQuantDevice(device, o, &why_not_gpu);
  if (!accel.ok()) return ReportError(accel.status());
  if (!quiet) {
    std::fprintf(stderr, "device       %s%s%s\n", (*accel)->name().c_str(), why_not_gpu.empty() ? "" : ": ",
                 why_not_gpu.c_str());
  }
  auto result = quant::QuantizeModel(o, [&](const quant::Progress& p) {
    if (!quiet) std::fprintf(stderr, "[%-9s %5.1f%%] %s\n", quant::StageName(p.stage), 100.0 * p.fraction, p.message.c_str());
    return true;
  }, accel->get());
  if (!result.ok()) return ReportError(result.status());
  const nlohmann::json report = nlohmann::json::parse(result->report_json);
  if (json_out) {
    std::printf("%s\n", report.dump().c_str());
    return 0;
  }
  std::printf("wrote        %s\n", result->output_dir.c_str());
  // From the report: the accuracy-driven mode may have chosen another preset than asked.
  std::printf("preset       %s %s scope %s (%s activations)\n", report["preset"].get<std::string>().c_str(),
              o.bits.c_str(), o.scope.c_str(), report["activation_granularity"].get<std::string>().c_str());
  std::printf("transforms   %s\n", report["transforms"].dump().c_str());
  std::printf("device       %s\n", report["device"].get<std::string>().c_str());
  if (!report["evaluation"].is_null()) {
    const auto& e = report["evaluation"];
    std::printf("perplexity   float %.4f  quantized %.4f  (%s)\n", e["float_perplexity"].get<double>(),
                e["quantized_perplexity"].get<double>(), Percent(e["relative_change"].get<double>()).c_str());
    std::printf("agreement    %.4f top-1, mean KL %.5f nats over %lld predictions\n", e["top1_agreement"].get<double>(),
                e["mean_kl"].get<double>(), static_cast<long long>(e["tokens_scored"].get<int64_t>()));
  }
  if (report["transform_notes"].contains("diagnostics")) {
    // One line per layer: weight errors, then each linear input's activation error (and its
    // largest channel RMS over the median).
    const auto& dg = report["transform_notes"]["diagnostics"];
    std::printf("diagnostics  weight ‖W−Q(W)‖/‖W‖ and activation ‖x−Q(x)‖/‖x‖ (max/median channel rms)\n");
    for (const auto& wl : dg["weights"]) {
      const int layer = wl["layer"].get<int>();
      std::printf("  L%-2d W in %.4f x %.4f dt %.4f out %.4f dtpath %.4f |", layer, wl["in_proj"].get<double>(),
                  wl["x_proj"].get<double>(), wl["dt_proj"].get<double>(), wl["out_proj"].get<double>(),
                  wl["dt_path"].get<double>());
      for (const auto& a : dg["activations"])
        if (a["layer"].get<int>() == layer)
          std::printf(" %s %.4f (%.0f)", a["site"].get<std::string>().c_str(), a["rel_error"].get<double>(),
                      a["max_over_median_rms"].get<double>());
      std::printf("\n");
    }
  }
  if (!report["tuning"].is_null()) {
    const auto& t = report["tuning"];
    std::printf("tuning       budget %.2f%% on the held-out calibration tail: %s, kept \"%s\"\n",
                t["tolerable_loss_percent"].get<double>(), t["met"].get<bool>() ? "met" : "NOT met",
                t["chosen"].get<std::string>().c_str());
    for (const auto& tr : t["trials"]) {
      if (tr.contains("skipped")) {
        std::printf("  %-40s skipped: %s\n", tr["name"].get<std::string>().c_str(), tr["skipped"].get<std::string>().c_str());
      } else {
        std::printf("  %-40s %+.3f%% %s\n", tr["name"].get<std::string>().c_str(), tr["loss_percent"].get<double>(),
                    tr["within_budget"].get<bool>() ? "within" : "over");
      }
    }
  }
  std::printf("time         %s\n", report["timings_seconds"].dump().c_str());
  std::printf("device time  %s\n", report["device_step_seconds"].dump().c_str());
  return 0;
}

}  // namespace mq::tools
