// The Vision Mamba forward pass on the CPU (vim-forward.md section 3), float32 with the residual
// stream in float32; the same code runs a quantized model (its Linears are INT8, the S-SiLU gate
// and the online rotation at out_proj come with the weights). Batched over images: the linears
// run on BLAS / the INT8 kernel over all B·L tokens at once, the conv and scan over cores.
#pragma once

#include <cstdint>

#include "util/status.h"
#include "vim/vim_activation_site.h"
#include "vim/vim_weights.h"

namespace mq {

// images: [batch, C, H, W] normalized; logits: [batch, num_classes]. The caller checks sizes
// (VimModel::Classify does); `observer` may be null.
Status VimForward(const VimWeights& w, const float* images, int64_t batch, float* logits,
                  VimObserver* observer = nullptr);

}  // namespace mq
