// config.json of a Vision Mamba (Vim) classifier (`model_type: vim`): the official hustvl/Vim
// "bimambav2 ... midclstok div2" configuration (see ../shared/fixtures/vision/vim-forward.md).
// The one owner of Vim's geometry: every size is range-checked here, and the derived sizes
// (grid, patches, sequence length, cls position) are computed here and nowhere else.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace mq {

struct VimConfig {
  int64_t img_size = 224;     // H = W
  int64_t patch_size = 16;    // P
  int64_t stride = 16;        // S
  int64_t in_chans = 3;       // C
  int64_t embed_dim = 192;    // D
  int64_t depth = 24;
  int64_t d_state = 16;       // N
  int64_t d_conv = 4;         // K
  int64_t expand = 2;
  int64_t d_inner = 384;      // E = expand · D
  int64_t dt_rank = 12;       // R = ceil(D / 16) ("auto")
  int64_t num_classes = 1000;
  double norm_epsilon = 1e-5;
  bool if_divide_out = true;  // the two directions' gated outputs are halved
  bool conv_bias = true;      // conv1d/conv1d_b carry a bias
  // Normalization the images were given (informational: Classify takes normalized images).
  std::vector<double> input_mean, input_std;

  // Derived geometry.
  int64_t grid_size() const { return (img_size - patch_size) / stride + 1; }
  int64_t num_patches() const { return grid_size() * grid_size(); }
  int64_t seq_len() const { return num_patches() + 1; }
  int64_t cls_token_index() const { return num_patches() / 2; }
  int64_t image_numel() const { return in_chans * img_size * img_size; }

  // Largest values accepted for each size (far beyond the released Vim-base).
  static constexpr int64_t kMaxImageSize = 4096;
  static constexpr int64_t kMaxPatches = 1 << 16;
  static constexpr int64_t kMaxChannels = 64;
  static constexpr int64_t kMaxEmbedDim = 16384;
  static constexpr int64_t kMaxDepth = 512;
  static constexpr int64_t kMaxState = 256;
  static constexpr int64_t kMaxConv = 64;
  static constexpr int64_t kMaxExpand = 16;
  static constexpr int64_t kMaxClasses = 1 << 20;

  // Parses and validates; unsupported architecture flags (no cls token, RoPE, bidirectional
  // blocks, layer scale, LayerNorm, a v1 mixer, ...) are Unimplemented, bad values InvalidArgument.
  static StatusOr<VimConfig> FromJson(const nlohmann::json& j, const std::string& source);
  static StatusOr<VimConfig> FromFile(const std::string& path);
  // The config.json written for this model (the official keys, derived sizes included).
  nlohmann::json ToJson() const;
  Status Validate() const;
};

// True when the config.json at `path` declares `model_type: vim` (false on any read error).
bool IsVimConfigFile(const std::string& path);

// The released shapes (vim-forward.md section 1): "tiny", "small", "base". NotFound otherwise.
StatusOr<VimConfig> ReleasedVimConfig(const std::string& name);

}  // namespace mq
