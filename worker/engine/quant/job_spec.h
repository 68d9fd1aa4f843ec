// The quantization job spec's one owner: the names each choice accepts, the limits of each number
// and the check of a whole job. Defaults are QuantizeOptions' initializers (quantize_pipeline.h).
// Every entry point runs this check on the options it built: mq-engine quantize, the engine's
// pipeline itself (QuantSpec::FromOptions, QuantizeModel), and the service through the one proto
// adapter (common/quant_spec_proto.h), which mq-server runs at submission, mq-worker before it
// runs a job and mqctl before it sends one. So a spec the server accepts is a spec the engine runs.
//
// Light on purpose (no BLAS, model or evaluation code): mq-server links it (mq_job_spec) without
// the engine's numerical backends.
#pragma once

#include <array>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "quant/quantize_pipeline.h"
#include "util/status.h"

namespace mq::quant {

// Accepted names of each choice; the first is the default (QuantizeOptions' initializer).
inline constexpr std::array<std::string_view, 4> kPresetNames = {"mambaquant", "rtn", "smoothquant", "quarot"};
inline constexpr std::array<std::string_view, 2> kBitsNames = {"w8a8", "w4a8"};
inline constexpr std::array<std::string_view, 2> kScopeNames = {"linear", "full"};
inline constexpr std::array<std::string_view, 2> kActGranularityNames = {"per_token", "per_tensor"};
inline constexpr std::array<std::string_view, 3> kWeightClipNames = {"auto", "max", "mse"};
inline constexpr std::array<std::string_view, 2> kStateGranularityNames = {"per_step_channel", "per_step"};
// QuantizeOptions::r1_cov_all_layers as a name: true is "all_layers".
inline constexpr std::array<std::string_view, 2> kR1CovarianceNames = {"all_layers", "layer0"};
// The devices a job can be pinned to ("auto", the default, picks one).
inline constexpr std::array<std::string_view, 2> kDeviceNames = {"cpu", "cuda"};

// Numeric limits, inclusive.
struct JobSpecLimits {
  static constexpr int kMinSamples = 1;        // calibration windows
  static constexpr int kMaxSamples = 65536;
  // A window scores seq_len − 1 next-token predictions: fewer than 2 tokens calibrate nothing.
  static constexpr int kMinSeqLen = 2;
  static constexpr int kMaxSeqLen = 65536;
  static constexpr int kMinEvalWindow = 2;     // eval/perplexity.h: a window under 2 tokens scores nothing
  static constexpr int kMaxEvalWindow = 65536;
  static constexpr double kMaxPercentile = 100.0;       // act_percentile in (0, 100]
  static constexpr double kMinSmoothAlpha = 0.05;       // smooth_alpha in [0.05, 0.95]: 0 or 1 would
  static constexpr double kMaxSmoothAlpha = 0.95;       // move a whole range onto one side
  static constexpr double kMaxTolerableLossPercent = 100.0;  // a requested budget in (0, 100]
  static constexpr double kMaxCalibHoldoutFraction = 0.5;    // in [0, 0.5]
  // w8_layers: at most this many entries, each in [0, kMaxW8Layers); the model's own layer count
  // bounds them again once it is loaded (and in an export, format/quantization_metadata.h).
  static constexpr int kMaxW8Layers = 1024;
};

// INVALID_ARGUMENT "<field> must be one of a, b, c; got "x"" unless `value` is one of `names`.
Status CheckChoice(std::string_view field, const std::string& value, std::span<const std::string_view> names);

// A requested accuracy budget (QuantizeOptions::tolerable_loss_percent, where 0 means "not
// requested"): in (0, 100]; NaN is refused.
Status CheckTolerableLoss(double percent);
// A state granularity asked for (a flag or a request field that was set) with a scope that
// quantizes no state would be silently ignored: refused. The entry points that know whether it was
// set call it (mq-engine's flags, the server and mqctl on a submitted spec); stored specs are not
// re-judged.
Status CheckStateGranularityScope(bool given, std::string_view scope);

// w8_layers of a job with `bits`: only with w4a8, at most kMaxW8Layers entries, each in
// [0, kMaxW8Layers), no repeats. `num_layers` > 0 also bounds each by the model's layer count.
Status CheckW8Layers(std::string_view bits, const std::vector<int>& layers, int64_t num_layers = 0);

// The command-line form of w8_layers (mq-engine and mqctl `--w8-layers`): comma-separated layer
// indices, "0,5,7". Range and repeats are CheckW8Layers' to judge.
StatusOr<std::vector<int>> ParseLayerList(std::string_view text);

// The choices, the percentile and w8_layers: what QuantSpec::FromOptions needs to resolve a spec (also for
// a quantized export's quantization_config, which carries no job sizes).
Status CheckSpecChoices(const QuantizeOptions& o);

// What the job quantizes: a text model (QuantizeModel) or a Vision Mamba classifier
// (QuantizeVimModel, which takes the same choices but calibrates on images and has no
// accuracy-driven mode: there is no held-out text to tune on).
enum class JobModel { kText, kVim };

// The whole job: the choices, then num_samples, seq_len, eval_window, tolerable_loss_percent and
// calib_holdout_fraction (and for kVim, no tolerable_loss_percent). Messages name the field as
// QuantizeOptions and the proto spell it (`seq_len must be in [2, 65536]; got 1`). Paths are not
// checked here (the loaders do).
Status ValidateJobOptions(const QuantizeOptions& o, JobModel model = JobModel::kText);

}  // namespace mq::quant
