// Quantization of a Vision Mamba model with the language path's presets, adapted as the
// MambaQuant paper does for Vim: calibration on images; the residual-stream R1 (Hadamard or
// KLT-enhanced) through patch embedding, cls token, positions and head; R5 on the dt path of BOTH
// scan directions (each with its own KLT); S2 smoothing with S-SiLU and the online R2 at the shared
// out_proj, which handles the summed SSM outputs of both directions; S5 δ smoothing before R5;
// SmoothQuant's γ smoothing; scope full: INT8 conv1d and h·C in both directions, with S3 at the
// shared conv input and S4 + online R4 at each direction's h·C;
// W8A8 / W4A8 with per-token or static per-tensor (percentile-clipped) activation scales. The
// patch embedding and the head stay float (as the embeddings and LM head of the language path).
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "quant/quant_accelerator.h"
#include "quant/quant_spec.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"
#include "vim/vim_image_set.h"
#include "vim/vim_weights.h"

namespace mq {

struct VimQuantizeOptions {
  std::string model_dir;   // float Vim directory (read only)
  std::string output_dir;  // created; must not exist or be empty
  std::string preset = "mambaquant";          // rtn | smoothquant | quarot | mambaquant
  std::string bits = "w8a8";                  // w8a8 | w4a8
  // linear | full (also INT8 conv1d input/weight and both operands of h·C in both scan directions)
  std::string scope = "linear";
  std::string act_granularity = "per_token";  // per_token | per_tensor (static)
  std::string calib_path;                     // image set (vim_image_set.h)
  std::string calib_prefix;                   // its tensor prefix ("calib_" for the vim-digits file)
  int64_t num_samples = 0;                    // calibration images drawn by `seed` (0: all)
  uint64_t seed = 0;                          // image sampling and random Hadamard signs
  std::string eval_path, eval_prefix;         // optional labelled image set for the report
  // mambaquant components (ignored by other presets), switchable for the ablation.
  bool klt_r1 = true, klt_r5 = true, online_r2 = true, smooth_s2 = true;
  // S5: each δ channel equalized into dt_proj's column before R5 (both directions), so that one
  // large δ channel is not spread by R5 over every x_proj δ row (docs/quantization-vim.md).
  bool smooth_s5 = true;
  // Scope full, mambaquant: S4 + online R4 at h·C of each direction, S3 at the shared conv input.
  bool smooth_s4 = true, smooth_conv = true;
  std::string state_granularity = "per_step_channel";  // scope full, h scales: per_step | per_step_channel
  bool r1_cov_all_layers = true;
  double act_percentile = 99.9;
  std::string weight_clip = "auto";
  // Every transform, linears kept float: the result must compute the float model's function.
  bool transform_only = false;
};

// Most calibration images one job uses.
inline constexpr int64_t kMaxVimCalibrationImages = 1 << 16;

struct VimQuantizedBuild {
  quant::QuantSpec spec;
  VimWeights model;  // transformed, and quantized unless transform_only
  nlohmann::json quantization_config;  // what the export writes into config.json
  nlohmann::json notes = nlohmann::json::object();
};

// CALIBRATE, TRANSFORM and QUANTIZE of `original` on the calibration images (already loaded).
StatusOr<VimQuantizedBuild> BuildQuantizedVim(const VimQuantizeOptions& options, const VimWeights& original,
                                              const ImageSet& calib, const quant::ProgressCallback& progress = nullptr,
                                              quant::QuantAccelerator* accel = nullptr);

// The whole job (LOAD → CALIBRATE → TRANSFORM → QUANTIZE → EVALUATE → EXPORT) as mq-engine
// quantize runs it for a Vim model. The report carries float and quantized top-1 accuracy,
// top-1 agreement and the mean KL on the evaluation images.
StatusOr<quant::QuantizeResult> QuantizeVimModel(const VimQuantizeOptions& options,
                                                 const quant::ProgressCallback& progress = nullptr);

}  // namespace mq
