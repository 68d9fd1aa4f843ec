// The parameters of a Vision Mamba classifier in the engine's working form (float32 on the host;
// INT8 linears once quantized), loaded from safetensors with the official hustvl/Vim
// state_dict key names (vim-forward.md section 2), every shape checked against the config.
#pragma once

#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/linear.h"
#include "model/mamba_weights.h"
#include "util/status.h"
#include "vim/vim_config.h"

namespace mq {

// One block. Both halves use the language path's layer layout so that its transforms
// (quant/rotation_fusion.h) apply to a Vim block unchanged.
struct VimLayerWeights {
  // norm, the shared in_proj (x | z), the shared out_proj with its S-SiLU gate_scale, and the
  // forward branch: conv1d, x_proj, dt_proj, A_log/A, D.
  MambaLayerWeights mixer;
  // The backward branch only: conv1d_b, x_proj_b, dt_proj_b, A_b_log/A, D_b (norm, in_proj and
  // out_proj stay empty).
  MambaLayerWeights backward;
};

struct VimWeights {
  VimConfig config;
  std::vector<float> patch_weight;  // [D, C·P·P] (Conv2d weight [D, C, P, P] flattened)
  std::vector<float> patch_bias;    // [D]
  std::vector<float> cls_token;     // [D]
  std::vector<float> pos_embed;     // [L, D]
  std::vector<VimLayerWeights> layers;
  std::vector<float> norm_f;        // [D] (all ones once folded into the head)
  Linear head;                      // [num_classes, D] with bias

  int64_t D() const { return config.embed_dim; }
  int64_t E() const { return config.d_inner; }
  int64_t N() const { return config.d_state; }
  int64_t R() const { return config.dt_rank; }
  int64_t K() const { return config.d_conv; }
  int64_t L() const { return config.seq_len(); }
  int64_t patch_numel() const { return config.in_chans * config.patch_size * config.patch_size; }
};

// The official key names, one owner for the loader, the exporter and make-model.
namespace vim_keys {
std::string Layer(int64_t i);  // "layers.{i}"
inline constexpr const char* kClsToken = "cls_token";
inline constexpr const char* kPosEmbed = "pos_embed";
inline constexpr const char* kPatchWeight = "patch_embed.proj.weight";
inline constexpr const char* kPatchBias = "patch_embed.proj.bias";
inline constexpr const char* kNormF = "norm_f.weight";
inline constexpr const char* kHead = "head";
}  // namespace vim_keys

// Loads config.json and the float safetensors weights of `dir` (F32, F16 and BF16 are upcast).
// Missing tensors, shapes that disagree with the config, non-finite values and tensors the
// config does not account for (e.g. a deeper model) are errors naming the tensor.
StatusOr<VimWeights> LoadVimWeights(const std::string& dir);
StatusOr<VimWeights> LoadVimWeights(const VimConfig& config, const SafetensorsModel& tensors);

}  // namespace mq
