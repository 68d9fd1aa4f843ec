// config.json of a Mamba-1 model (`model_type: mamba`), with the Hugging Face defaults.
#pragma once

#include <cstdint>
#include <string>

#include <nlohmann/json_fwd.hpp>

#include "util/status.h"

namespace mq {

struct MambaConfig {
  int64_t vocab_size = 50280;
  int64_t hidden_size = 768;        // d
  int64_t intermediate_size = 1536; // E = expand · d unless given
  int64_t state_size = 16;          // N
  int64_t num_hidden_layers = 32;
  int64_t conv_kernel = 4;          // K
  int64_t time_step_rank = 48;      // R; "auto" = ceil(d / 16)
  int64_t expand = 2;
  double layer_norm_epsilon = 1e-5;
  bool residual_in_fp32 = true;
  bool tie_word_embeddings = true;
  bool use_bias = false;            // in_proj / out_proj bias
  bool use_conv_bias = true;
  int64_t bos_token_id = 0;
  int64_t eos_token_id = 0;
  int64_t pad_token_id = 0;

  // INVALID_ARGUMENT naming `source` for malformed or out-of-range fields (checked before any
  // arithmetic on them), UNIMPLEMENTED for another model_type. The text is read with the
  // model-format limits (format/limits.h: size, nesting depth).
  static StatusOr<MambaConfig> FromJsonText(const std::string& text, const std::string& source);
  static StatusOr<MambaConfig> FromJson(const nlohmann::json& j, const std::string& source);
  static StatusOr<MambaConfig> FromFile(const std::string& path);
  // Checks the sizes are positive and small enough for int arithmetic on tensors.
  Status Validate() const;
};

}  // namespace mq
