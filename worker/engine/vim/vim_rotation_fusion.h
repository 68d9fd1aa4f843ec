// The Vim-specific offline fusions: the residual stream of Vim starts at the patch embedding, the
// cls token and the position table (not a token embedding) and ends at the classification head.
// The per-block fusions (R5, S2 + R2, SmoothQuant's γ) are the language path's
// (quant/rotation_fusion.h), applied to each block's MambaLayerWeights halves.
#pragma once

#include <vector>

#include "quant/quant_accelerator.h"
#include "util/status.h"
#include "vim/vim_weights.h"

namespace mq {

// Folds each block's RMSNorm γ into the columns of its in_proj and γ_f into the head's columns
// (γ ← 1): RMSNorm without γ commutes with a rotation of the residual stream.
void FoldVimNormWeights(VimWeights& w);

// R1 (D×D orthogonal, row vectors times R1) on the residual stream: patch conv rows
// W_pe ← R1ᵀ·W_pe, b_pe, cls_token and every pos_embed row ← ·R1, W_in ← W_in·R1,
// W_out ← R1ᵀ·W_out and W_head ← W_head·R1. Requires FoldVimNormWeights first.
Status ApplyVimResidualRotation(VimWeights& w, const std::vector<double>& r1, quant::QuantAccelerator& accel);

}  // namespace mq
