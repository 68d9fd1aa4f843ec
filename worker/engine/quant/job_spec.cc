#include "quant/job_spec.h"

#include <charconv>
#include <system_error>

namespace mq::quant {
namespace {

std::string Joined(std::span<const std::string_view> names) {
  std::string out;
  for (std::string_view n : names) {
    if (!out.empty()) out += ", ";
    out += n;
  }
  return out;
}

// The shortest text that reads back as `v` (100.00000001 must not print as "100").
std::string Number(double v) {
  char buf[32];
  auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
  return ec == std::errc() ? std::string(buf, end) : std::string("?");
}

Status InRange(std::string_view field, int64_t value, int64_t lo, int64_t hi) {
  if (value >= lo && value <= hi) return OkStatus();
  return InvalidArgumentError(std::string(field) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                              "]; got " + std::to_string(value));
}

}  // namespace

Status CheckChoice(std::string_view field, const std::string& value, std::span<const std::string_view> names) {
  for (std::string_view n : names)
    if (value == n) return OkStatus();
  // The refused value is echoed bounded: it may come from a network client.
  return InvalidArgumentError(std::string(field) + " must be one of " + Joined(names) + "; got \"" +
                              value.substr(0, 64) + (value.size() > 64 ? "…" : "") + "\"");
}

Status CheckTolerableLoss(double percent) {
  // Written so that NaN fails: every comparison with NaN is false.
  if (percent > 0.0 && percent <= JobSpecLimits::kMaxTolerableLossPercent) return OkStatus();
  return InvalidArgumentError("tolerable_loss_percent must be in (0, 100]; got " + Number(percent));
}

Status CheckSpecChoices(const QuantizeOptions& o) {
  MQ_RETURN_IF_ERROR(CheckChoice("preset", o.preset, kPresetNames));
  MQ_RETURN_IF_ERROR(CheckChoice("bits", o.bits, kBitsNames));
  MQ_RETURN_IF_ERROR(CheckChoice("scope", o.scope, kScopeNames));
  MQ_RETURN_IF_ERROR(CheckChoice("act_granularity", o.act_granularity, kActGranularityNames));
  MQ_RETURN_IF_ERROR(CheckChoice("weight_clip", o.weight_clip, kWeightClipNames));
  MQ_RETURN_IF_ERROR(CheckChoice("state_granularity", o.state_granularity, kStateGranularityNames));
  if (!(o.act_percentile > 0.0 && o.act_percentile <= JobSpecLimits::kMaxPercentile))
    return InvalidArgumentError("act_percentile must be in (0, 100]; got " + Number(o.act_percentile));
  if (!(o.smooth_alpha >= JobSpecLimits::kMinSmoothAlpha && o.smooth_alpha <= JobSpecLimits::kMaxSmoothAlpha))
    return InvalidArgumentError("smooth_alpha must be in [" + Number(JobSpecLimits::kMinSmoothAlpha) + ", " +
                                Number(JobSpecLimits::kMaxSmoothAlpha) + "]; got " + Number(o.smooth_alpha));
  return OkStatus();
}

Status ValidateJobOptions(const QuantizeOptions& o, JobModel model) {
  MQ_RETURN_IF_ERROR(CheckSpecChoices(o));
  MQ_RETURN_IF_ERROR(InRange("num_samples", o.num_samples, JobSpecLimits::kMinSamples, JobSpecLimits::kMaxSamples));
  MQ_RETURN_IF_ERROR(InRange("seq_len", o.seq_len, JobSpecLimits::kMinSeqLen, JobSpecLimits::kMaxSeqLen));
  MQ_RETURN_IF_ERROR(
      InRange("eval_window", o.eval_window, JobSpecLimits::kMinEvalWindow, JobSpecLimits::kMaxEvalWindow));
  if (o.tolerable_loss_percent != 0.0) MQ_RETURN_IF_ERROR(CheckTolerableLoss(o.tolerable_loss_percent));
  if (!(o.calib_holdout_fraction >= 0.0 && o.calib_holdout_fraction <= JobSpecLimits::kMaxCalibHoldoutFraction))
    return InvalidArgumentError("calib_holdout_fraction must be in [0, 0.5]; got " + Number(o.calib_holdout_fraction));
  if (model == JobModel::kVim && o.tolerable_loss_percent != 0.0)
    return InvalidArgumentError("tolerable_loss_percent: the accuracy-driven mode is for text models only (a Vim model "
                                "calibrates on images and has no held-out text to tune on)");
  return OkStatus();
}

}  // namespace mq::quant
