// The whole quantization job as the worker and `mq-engine quantize` run it:
// LOAD -> CALIBRATE -> TRANSFORM -> QUANTIZE -> EVALUATE -> EXPORT.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq::quant {

class QuantAccelerator;

enum class Stage { kLoad, kCalibrate, kTransform, kQuantize, kEvaluate, kExport };
const char* StageName(Stage stage);  // "LOAD", "CALIBRATE", ...

struct QuantizeOptions {
  std::string model_dir;        // float Hugging Face model directory (read only)
  std::string output_dir;       // created; must not exist or be empty
  std::string preset = "mambaquant";  // rtn | smoothquant | quarot | mambaquant
  std::string bits = "w8a8";          // w8a8 | w4a8
  std::string scope = "linear";       // linear | full
  std::string act_granularity = "per_token";  // per_token (dynamic) | per_tensor (static)
  std::string calib_text_path;  // calibration text (documents separated by blank lines)
  int num_samples = 128;        // calibration windows
  int seq_len = 256;            // tokens per calibration window
  uint64_t seed = 0;            // window sampling and random Hadamard signs
  std::string eval_text_path;   // optional: evaluate float vs quantized on this text
  int eval_window = 256;
  // mambaquant components, each switchable for the ablation (ignored by other presets).
  bool klt_r1 = true;           // KLT-enhanced rotation of the residual stream
  bool klt_r5 = true;           // KLT-enhanced rotation of the dt path
  bool smooth_s5 = true;        // δ channels equalized into dt_proj's columns before R5 (docs/quantization.md)
  bool online_r2 = true;        // online Hadamard before out_proj
  bool smooth_s2 = true;        // smooth-fused rotation at out_proj (S-SiLU)
  bool smooth_s4 = true;        // smoothing + rotation of h·C (scope full)
  bool smooth_conv = true;      // scope full: conv1d input channels equalized into in_proj rows / conv weights
  bool r1_cov_all_layers = true;  // Σ for R1 summed over all layers (false: layer 0 only)
  double act_percentile = 99.9;   // static scales: clipping percentile of per-token maxima
  // SmoothQuant's migration strength of every smoothing step (S2, S3, S4, S5; smoothquant's norm
  // smoothing): s_j = max|x_j|^α / max|W_j|^(1−α). In (0, 1).
  double smooth_alpha = 0.5;
  bool quantize_lm_head = false;
  std::string state_granularity = "per_step_channel";  // scope full, h scales: per_step | per_step_channel
  std::string weight_clip = "auto";  // auto (mse for 4-bit, max for 8-bit) | max | mse
  // w4a8 only, mixed precision: the layers whose four linears keep 8-bit weights (each below the
  // model's num_hidden_layers, no repeats; any order). Their rows use the job's weight clipping.
  std::vector<int> w8_layers;
  // Applies every transform but keeps the linears in float: the transformed model must compute
  // the original function (the function-preservation check).
  bool transform_only = false;
  // Measures weight and activation quantization errors per layer and site before quantizing
  // (quant/quant_diagnostics.h) into the report's transform_notes.diagnostics.
  bool diagnostics = false;
  // The tail fraction of the calibration text's tokens held out of calibration (for tuning), in [0, 0.5].
  double calib_holdout_fraction = 0.0;
  // Accuracy-driven mode (quant/accuracy_tuning.h): > 0 makes QuantizeModel try the method's
  // choices, cheapest first, on the held-out calibration tail and keep the first whose perplexity
  // change is within this many percent; the report's "tuning" lists the trials. In [0, 100].
  double tolerable_loss_percent = 0.0;
};

struct Progress {
  Stage stage;
  double fraction;      // 0..1 within the stage
  std::string message;  // human readable
};
// Called from the pipeline thread; returning false cancels the job (QuantizeModel then returns
// CANCELLED and leaves no output directory behind).
using ProgressCallback = std::function<bool(const Progress&)>;

struct QuantizeResult {
  std::string output_dir;
  std::string report_json;  // the quantization report (also written as quant_report.json)
};

// The in-memory part of a job (LOAD through QUANTIZE, or through TRANSFORM with
// transform_only): the function-preservation tests and the evaluation tools use it.
struct QuantizedModelBuild {
  MambaWeights original;  // the float model as loaded
  MambaWeights model;     // transformed, and quantized unless transform_only
  std::string spec_json;  // the resolved quantization_config
  std::vector<int32_t> holdout_tokens;  // the calibration tail held out (calib_holdout_fraction)
};
// `accel` runs calibration, eigendecompositions, rotation products and evaluation (null: the CPU
// reference, CpuAccelerator()). A device that cannot run some step of the job fails it up front
// with Unimplemented (QuantAccelerator::CheckSupported).
StatusOr<QuantizedModelBuild> BuildQuantizedModel(const QuantizeOptions& options, const ProgressCallback& progress,
                                                  QuantAccelerator* accel = nullptr);

StatusOr<QuantizeResult> QuantizeModel(const QuantizeOptions& options, const ProgressCallback& progress,
                                       QuantAccelerator* accel = nullptr);

}  // namespace mq::quant
