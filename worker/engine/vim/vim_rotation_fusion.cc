#include "vim/vim_rotation_fusion.h"

#include <algorithm>

namespace mq {
namespace {

void ScaleColumns(std::vector<float>& w, int64_t rows, int64_t cols, const std::vector<float>& s) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) w[r * cols + j] *= s[j];
}

}  // namespace

void FoldVimNormWeights(VimWeights& w) {
  const int64_t D = w.D();
  for (VimLayerWeights& lw : w.layers) {
    ScaleColumns(lw.mixer.in_proj.weight, lw.mixer.in_proj.out_features, D, lw.mixer.norm);
    std::fill(lw.mixer.norm.begin(), lw.mixer.norm.end(), 1.0f);
  }
  ScaleColumns(w.head.weight, w.head.out_features, D, w.norm_f);
  std::fill(w.norm_f.begin(), w.norm_f.end(), 1.0f);
}

Status ApplyVimResidualRotation(VimWeights& w, const std::vector<double>& r1, quant::QuantAccelerator& accel) {
  const int64_t D = w.D();
  // Everything written into the residual stream: the patch conv's output rows, its bias, the cls
  // token and the position rows.
  MQ_RETURN_IF_ERROR(accel.MultiplyLeftTransposed(w.patch_weight, w.patch_numel(), r1, 0, D));
  MQ_RETURN_IF_ERROR(accel.MultiplyRight(w.patch_bias, D, r1));
  MQ_RETURN_IF_ERROR(accel.MultiplyRight(w.cls_token, D, r1));
  MQ_RETURN_IF_ERROR(accel.MultiplyRight(w.pos_embed, D, r1));
  for (VimLayerWeights& lw : w.layers) {
    MQ_RETURN_IF_ERROR(accel.MultiplyRight(lw.mixer.in_proj.weight, D, r1));
    MQ_RETURN_IF_ERROR(accel.MultiplyLeftTransposed(lw.mixer.out_proj.weight, lw.mixer.out_proj.in_features, r1, 0, D));
  }
  // Everything read from it: the head (after a γ-free RMSNorm).
  return accel.MultiplyRight(w.head.weight, D, r1);
}

}  // namespace mq
