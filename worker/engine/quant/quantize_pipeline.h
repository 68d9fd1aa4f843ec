// The whole quantization job as the worker and `mq-engine quantize` run it:
// LOAD -> CALIBRATE -> TRANSFORM -> QUANTIZE -> EVALUATE -> EXPORT.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "util/status.h"

namespace mq::quant {

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
  bool online_r2 = true;        // online Hadamard before out_proj
  bool smooth_s2 = true;        // smooth-fused rotation at out_proj (S-SiLU)
  bool smooth_s4 = true;        // smoothing + rotation of h·C (scope full)
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

StatusOr<QuantizeResult> QuantizeModel(const QuantizeOptions& options, const ProgressCallback& progress);

}  // namespace mq::quant
