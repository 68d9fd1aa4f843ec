// The kernels of GPU quantization jobs (cuda_quant_accelerator.cu): calibration statistics,
// float32 ↔ float64 conversion around the float64 rotation products, and the per-position
// comparison of two models' logits.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "util/status.h"

namespace mq::cuda {

// Per column j of x [rows, cols] (rows `ld` apart): absmax[j] = max(absmax[j], max_t |x_tj|) and
// sum[j] += Σ_t x_tj (float64).
Status LaunchColumnStats(const __half* x, int64_t ld, int64_t rows, int64_t cols, float* absmax, double* sum,
                         cudaStream_t stream);
Status LaunchColumnStats(const float* x, int64_t ld, int64_t rows, int64_t cols, float* absmax, double* sum,
                         cudaStream_t stream);

// out [rows, cols] (dense, float64) ← x [rows, cols] (rows `ld` apart).
Status LaunchWidenHalf(const __half* x, int64_t ld, int64_t rows, int64_t cols, double* out, cudaStream_t stream);
Status LaunchWidenFloat(const float* x, int64_t n, double* out, cudaStream_t stream);
Status LaunchNarrowDouble(const double* x, int64_t n, float* out, cudaStream_t stream);

// Per position r with targets[r] ≥ 0, over logits rows of length V of the reference and the
// candidate: out[4r..4r+3] = {−log p_ref(target), −log p_cand(target), KL(p_ref ‖ p_cand),
// argmax_ref == argmax_cand (first maximum, as std::max_element)}; zeros where targets[r] < 0.
Status LaunchCompareRows(const float* reference, const float* candidate, int64_t V, const int32_t* targets,
                         int64_t rows, double* out, cudaStream_t stream);

}  // namespace mq::cuda
