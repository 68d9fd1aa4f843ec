// Offline fusion of rotations and smoothing into the weights of a float model. Each function
// leaves the model's function unchanged in exact arithmetic (tests check this to 1e-4 on the
// fixtures); only the distribution of the activations that get quantized changes.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "model/mamba_weights.h"
#include "quant/online_rotation.h"
#include "quant/quant_accelerator.h"
#include "util/status.h"

namespace mq::quant {

// Folds each RMSNorm γ into the columns of the following in_proj and γ_f into the LM head
// (γ ← 1), and unties the LM head from the embeddings. RMSNorm without γ commutes with an
// orthogonal rotation of the residual stream, which is what makes R1 fusable.
void FoldNormWeights(MambaWeights& w);

// R1 (d×d, orthogonal, row vectors times R1): embeddings ← E·R1, W_in ← W_in·R1,
// W_out ← R1ᵀ·W_out, W_lm ← W_lm·R1. Requires FoldNormWeights first. The products (the bulk of
// the fusion's arithmetic) run on `accel`.
Status ApplyResidualRotation(MambaWeights& w, const std::vector<double>& r1, QuantAccelerator& accel);

// R5 (R×R) on the dt path of one layer: W_xp[δ rows] ← R5ᵀ·W_xp[δ rows], W_dt ← W_dt·R5.
Status ApplyDtRotation(MambaLayerWeights& layer, int64_t dt_rank, const std::vector<double>& r5,
                       QuantAccelerator& accel);

// S5 on the dt path of one layer (before R5): W_xp[δ row j] ← W_xp[δ row j] / s_j and
// W_dt[:, j] ← W_dt[:, j] · s_j, exact since δ enters nothing but dt_proj.
void ApplyDtSmoothing(MambaLayerWeights& layer, int64_t dt_rank, const std::vector<float>& s);

// S3 (scope full) at the conv1d input u0 of one layer: W_in[x row j] ← W_in[x row j] / s_j and
// conv row j ← conv row j · s_j (the conv is depthwise; its bias is unchanged). Exact, and both
// weights are quantized per row, so only the per-token grid of u0 changes.
void ApplyConvInputSmoothing(MambaLayerWeights& layer, const std::vector<float>& s);

// S2 + R2 at out_proj. `s` ([E]) may be empty (no smoothing); `r2` may be null (no rotation).
// W_in[z rows] ← diag(1/s)·W_in[z rows], gate becomes S-SiLU(z'; s), and
// W_out ← W_out·diag(s)·R2 with R2 applied online to the out_proj input. The fusion applies R2 to
// each row of W_out with the fast transform in float64 (O(d·E log E), never a dense E×E product).
void ApplyOutProjSmoothRotation(MambaLayerWeights& layer, const std::vector<float>& s,
                                std::shared_ptr<const HadamardRowTransform> r2);

// S4 + R4 at y = h·C (size N): W_xp[B rows] ← diag(1/s)·W_xp[B rows],
// W_xp[C rows] ← R4ᵀ·diag(s)·W_xp[C rows], and h·R4 online. `s` or `r4` may be empty.
Status ApplyStateSmoothRotation(MambaLayerWeights& layer, int64_t dt_rank, int64_t state_size,
                                const std::vector<float>& s, const std::vector<double>& r4, QuantAccelerator& accel);

// SmoothQuant where it folds exactly: γ ← γ/s and W_in ← W_in·diag(s).
void ApplyNormSmoothing(MambaLayerWeights& layer, const std::vector<float>& s);

}  // namespace mq::quant
