#include "quant_spec_proto.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "quant/job_spec.h"

namespace mq {
namespace {

// The engine names the field; the service names it inside the request.
absl::Status InSpec(const Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("spec.", s.message()));
}

}  // namespace

absl::StatusOr<quant::QuantizeOptions> QuantizeOptionsFromProto(const mambaquant::v1::QuantSpec& spec,
                                                                quant::JobModel model) {
  quant::QuantizeOptions o;
  if (!spec.preset().empty()) o.preset = spec.preset();
  if (!spec.bits().empty()) o.bits = spec.bits();
  if (!spec.scope().empty()) o.scope = spec.scope();
  if (!spec.act_granularity().empty()) o.act_granularity = spec.act_granularity();
  if (!spec.weight_clip().empty()) o.weight_clip = spec.weight_clip();
  if (!spec.state_granularity().empty()) o.state_granularity = spec.state_granularity();
  if (!spec.r1_covariance().empty()) {
    if (Status s = quant::CheckChoice("r1_covariance", spec.r1_covariance(), quant::kR1CovarianceNames); !s.ok())
      return InSpec(s);
    o.r1_cov_all_layers = spec.r1_covariance() == quant::kR1CovarianceNames[0];
  }
  if (!spec.backend().empty()) {
    if (Status s = quant::CheckChoice("backend", spec.backend(), quant::kDeviceNames); !s.ok()) return InSpec(s);
  }
  // Zero is "unset" in proto3; any other value goes to the engine's check as given.
  if (spec.num_samples() != 0) o.num_samples = spec.num_samples();
  if (spec.seq_len() != 0) o.seq_len = spec.seq_len();
  if (spec.eval_window() != 0) o.eval_window = spec.eval_window();
  o.seed = spec.seed();
  if (spec.has_klt_r1()) o.klt_r1 = spec.klt_r1();
  if (spec.has_klt_r5()) o.klt_r5 = spec.klt_r5();
  if (spec.has_online_r2()) o.online_r2 = spec.online_r2();
  if (spec.has_smooth_s2()) o.smooth_s2 = spec.smooth_s2();
  if (spec.has_smooth_s4()) o.smooth_s4 = spec.smooth_s4();
  if (spec.has_act_percentile()) o.act_percentile = spec.act_percentile();
  if (spec.has_smooth_alpha()) o.smooth_alpha = spec.smooth_alpha();
  if (spec.has_quantize_lm_head()) o.quantize_lm_head = spec.quantize_lm_head();
  if (spec.w8_layers_size() > quant::JobSpecLimits::kMaxW8Layers)
    return absl::InvalidArgumentError(absl::StrCat("spec.w8_layers has ", spec.w8_layers_size(), " entries; at most ",
                                                   quant::JobSpecLimits::kMaxW8Layers));
  for (uint32_t layer : spec.w8_layers()) {
    if (layer >= static_cast<uint32_t>(quant::JobSpecLimits::kMaxW8Layers))
      return absl::InvalidArgumentError(absl::StrCat("spec.w8_layers: layer ", layer, " is not in [0, ",
                                                     quant::JobSpecLimits::kMaxW8Layers, ")"));
    o.w8_layers.push_back(static_cast<int>(layer));
  }
  if (spec.has_tolerable_loss_percent()) {
    // The engine reads 0 as "not requested"; a budget the client set must be a budget.
    if (Status s = quant::CheckTolerableLoss(spec.tolerable_loss_percent()); !s.ok()) return InSpec(s);
    o.tolerable_loss_percent = spec.tolerable_loss_percent();
  }
  if (Status s = quant::ValidateJobOptions(o, model); !s.ok()) return InSpec(s);
  return o;
}

absl::Status CheckSubmittedQuantSpec(const mambaquant::v1::QuantSpec& spec) {
  const std::string scope = spec.scope().empty() ? quant::QuantizeOptions().scope : spec.scope();
  return InSpec(quant::CheckStateGranularityScope(!spec.state_granularity().empty(), scope));
}

absl::Status CheckSubmittedQuantSpecForModel(const mambaquant::v1::QuantSpec& spec, quant::JobModel model) {
  if (model != quant::JobModel::kVim) return absl::OkStatus();
  if (spec.backend() == "cuda") {
    return absl::InvalidArgumentError(
        "spec.backend: a Vim job quantizes on the CPU (it would wait for a GPU worker only to run there)");
  }
  const char* unused = spec.has_smooth_alpha()       ? "smooth_alpha"
                       : spec.has_quantize_lm_head() ? "quantize_lm_head"
                       : spec.seq_len() != 0         ? "seq_len"
                       : spec.eval_window() != 0     ? "eval_window"
                                                     : nullptr;
  if (unused == nullptr) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat("spec.", unused,
                                                 " is a text-model setting: a Vim job does not use it (its calibration "
                                                 "is whole images, its head stays float)"));
}

void FillQuantSpecDefaults(mambaquant::v1::QuantSpec* spec) {
  const quant::QuantizeOptions d;
  if (spec->preset().empty()) spec->set_preset(d.preset);
  if (spec->bits().empty()) spec->set_bits(d.bits);
  if (spec->scope().empty()) spec->set_scope(d.scope);
  if (spec->act_granularity().empty()) spec->set_act_granularity(d.act_granularity);
  if (spec->weight_clip().empty()) spec->set_weight_clip(d.weight_clip);
  if (spec->state_granularity().empty() && spec->scope() == "full") spec->set_state_granularity(d.state_granularity);
  if (spec->r1_covariance().empty())
    spec->set_r1_covariance(std::string(quant::kR1CovarianceNames[d.r1_cov_all_layers ? 0 : 1]));
  if (spec->num_samples() == 0) spec->set_num_samples(d.num_samples);
  if (spec->seq_len() == 0) spec->set_seq_len(d.seq_len);
  if (spec->eval_window() == 0) spec->set_eval_window(d.eval_window);
}

}  // namespace mq
