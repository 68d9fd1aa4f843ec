// The CUDA Vision Mamba classifier (ImageClassifier on the GPU; the backend plugin's
// open_classifier): the forward of ../shared/fixtures/vision/vim-forward.md batched over images,
// float32 activations and residual stream, one stream, scratch sized for max_batch images.
//
// Per block (T = B·L tokens; both scan directions in one launch, the backward one stored in its
// own reversed time, cuda_vim_math.h):
//   add + RMSNorm → in_proj → conv+SiLU (2 branches) → x_proj (each) → dt_proj (each)
//   → scan (softplus inside, 2·B sequences) → gate + halve → out_proj
// then add + final norm on the cls rows only → head. Patch embedding is im2col + a GEMM.
// Linears: FP32 (exact check), FP16 (speed) or the quantized export's INT8 (cuda_vim_linear.h);
// a quantized model's float parts (patch embedding, head) run in the chosen float mode.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "util/status.h"
#include "vim/image_classifier.h"
#include "vim/vim_weights.h"

namespace mq::cuda {

struct CudaVimOptions {
  // Images per Classify call at most; device scratch is sized for it. Default 256 (Vim-tiny: about
  // 1.1 GB of activations in float32).
  int64_t max_batch = 256;
  // Float linears in FP16 instead of FP32. FP32 is the default: the float path is held to
  // ‖Δ‖/‖ref‖ ≤ 1e-4 on logits against the float32 reference, which FP16 weights cannot promise.
  bool fp16 = false;
  // Per-stage GPU times (events between the stages of every call; CudaVimStageTimes reads them).
  bool stage_timing = false;

  static constexpr int64_t kMaxBatch = 16384;  // the scan launches 2·B sequences in grid.y
};

// A model directory (float or quantized export, vim/vim_model.h) onto device 0.
StatusOr<std::unique_ptr<ImageClassifier>> OpenCudaVimClassifier(const std::string& model_dir,
                                                                 const CudaVimOptions& options = {});
// Weights already in memory (tests, benchmarks); quantized() is true when any linear is INT8.
StatusOr<std::unique_ptr<ImageClassifier>> CreateCudaVimClassifier(const VimWeights& weights,
                                                                   const CudaVimOptions& options = {});

// GPU milliseconds per stage (patch, norm, in_proj, conv, x_proj, dt_proj, scan, gate, out_proj,
// head), summed over every Classify call of a classifier made with stage_timing; empty otherwise.
std::vector<std::pair<std::string, double>> CudaVimStageTimes(const ImageClassifier& classifier);

}  // namespace mq::cuda
