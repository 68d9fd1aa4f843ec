#include "quant/job_spec.h"

#include <algorithm>
#include <charconv>
#include <vector>
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
  // The refused value is echoed bounded and escaped: it comes from a network client, and a raw
  // newline or escape sequence would forge lines on the terminal of whoever reads the error. The
  // choices are ASCII names, so every other byte is shown as \xHH.
  std::string shown;
  for (const char ch : value.substr(0, 64)) {
    const auto b = static_cast<unsigned char>(ch);
    if (b >= 0x20 && b < 0x7f && b != '"' && b != '\\') {
      shown += ch;
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      shown += {'\\', 'x', kHex[b >> 4], kHex[b & 15]};
    }
  }
  return InvalidArgumentError(std::string(field) + " must be one of " + Joined(names) + "; got \"" + shown +
                              (value.size() > 64 ? "…" : "") + "\"");
}

Status CheckTolerableLoss(double percent) {
  // Written so that NaN fails: every comparison with NaN is false.
  if (percent > 0.0 && percent <= JobSpecLimits::kMaxTolerableLossPercent) return OkStatus();
  return InvalidArgumentError("tolerable_loss_percent must be in (0, 100]; got " + Number(percent));
}

Status CheckW8Layers(std::string_view bits, const std::vector<int>& layers, int64_t num_layers) {
  if (layers.empty()) return OkStatus();
  if (bits != "w4a8")
    return InvalidArgumentError("w8_layers keeps layers at 8-bit weights in a w4a8 job; bits is \"" +
                                std::string(bits.substr(0, 16)) + "\"");
  if (layers.size() > static_cast<size_t>(JobSpecLimits::kMaxW8Layers))
    return InvalidArgumentError("w8_layers has " + std::to_string(layers.size()) + " entries; at most " +
                                std::to_string(JobSpecLimits::kMaxW8Layers));
  const int64_t bound = num_layers > 0 ? std::min<int64_t>(num_layers, JobSpecLimits::kMaxW8Layers)
                                       : JobSpecLimits::kMaxW8Layers;
  std::vector<bool> seen(static_cast<size_t>(bound), false);
  for (int layer : layers) {
    if (layer < 0 || layer >= bound)
      return InvalidArgumentError("w8_layers: layer " + std::to_string(layer) + " is not in [0, " + std::to_string(bound) +
                                  ")" + (num_layers > 0 ? " (the model's layers)" : ""));
    if (seen[static_cast<size_t>(layer)])
      return InvalidArgumentError("w8_layers names layer " + std::to_string(layer) + " twice");
    seen[static_cast<size_t>(layer)] = true;
  }
  return OkStatus();
}

StatusOr<std::vector<int>> ParseLayerList(std::string_view text) {
  std::vector<int> out;
  if (text.empty()) return out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t end = std::min(text.find(',', start), text.size());
    const std::string_view item = text.substr(start, end - start);
    int v = -1;
    auto [ptr, ec] = std::from_chars(item.data(), item.data() + item.size(), v);
    if (item.empty() || ec != std::errc() || ptr != item.data() + item.size() || v < 0 || v >= JobSpecLimits::kMaxW8Layers)
      return InvalidArgumentError("w8_layers: \"" + std::string(item.substr(0, 16)) +
                                  "\" is not a layer index in [0, " + std::to_string(JobSpecLimits::kMaxW8Layers) +
                                  ") (the list is comma-separated: 0,5,7)");
    if (out.size() >= static_cast<size_t>(JobSpecLimits::kMaxW8Layers))
      return InvalidArgumentError("w8_layers: more than " + std::to_string(JobSpecLimits::kMaxW8Layers) + " entries");
    out.push_back(v);
    start = end + 1;
  }
  return out;
}

Status CheckStateGranularityScope(bool given, std::string_view scope) {
  if (!given || scope == "full") return OkStatus();
  return InvalidArgumentError("state_granularity sets the scales of the SSM state, which only scope full quantizes; "
                              "the scope is " + std::string(scope));
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
  return CheckW8Layers(o.bits, o.w8_layers);
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
  if (o.tolerable_loss_percent != 0.0 && !o.w8_layers.empty())
    return InvalidArgumentError("w8_layers: the accuracy-driven mode (tolerable_loss_percent) chooses the 8-bit layers "
                                "itself; set one or the other");
  if (model == JobModel::kVim && !o.w8_layers.empty())
    return InvalidArgumentError("w8_layers: mixed precision is for text models only (a Vim export holds one weight width)");
  if (model == JobModel::kVim && o.tolerable_loss_percent != 0.0)
    return InvalidArgumentError("tolerable_loss_percent: the accuracy-driven mode is for text models only (a Vim model "
                                "calibrates on images and has no held-out text to tune on)");
  return OkStatus();
}

}  // namespace mq::quant
