// Loads any model directory the engine runs: a float Hugging Face Mamba checkpoint, or a
// quantized export of this project (config.json with a `quantization_config` block).
#pragma once

#include <string>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {

struct LoadedModel {
  MambaWeights weights;
  bool quantized = false;
  std::string quantization_config_json;  // the config block as JSON text; empty for float models
};

StatusOr<LoadedModel> LoadModel(const std::string& dir);

}  // namespace mq
