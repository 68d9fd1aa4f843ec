// SmoothQuant-style smoothing factors: s_j = max|X_j|^α / max|W_{:,j}|^(1−α), clamped to ≥ min.
// Dividing the activation channel j by s_j and multiplying the weight column by s_j leaves the
// product unchanged while moving range from activations to weights.
#pragma once

#include <vector>

namespace mq::quant {

std::vector<float> SmoothingFactors(const std::vector<float>& act_absmax, const std::vector<float>& weight_col_absmax,
                                    double alpha = 0.5, double min_scale = 1e-2);

// Equalizing factors for the outputs y_j = w_j·x of rows [0, rows) of a row-major [*, cols] matrix
// whose input has second moment Σ ([cols²], E[x xᵀ]): s_j = rms_j / (geometric mean of the rms),
// rms_j = (w_j Σ w_jᵀ)^½, so y_j / s_j all have the same RMS and the overall level is kept.
// Rows with rms 0 keep s = 1.
std::vector<float> ConvInputFactors(const std::vector<float>& w, long rows, long cols, const std::vector<double>& sigma);

// max |w[:, j]| for a row-major [rows, cols] matrix.
std::vector<float> ColumnAbsMax(const std::vector<float>& w, long rows, long cols, long row_begin = 0,
                                long row_end = -1);

}  // namespace mq::quant
