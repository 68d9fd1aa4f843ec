// The tensors a Mamba-1 checkpoint of a given config.json holds, with their shapes: what the
// commit-time check compares a model's safetensors against.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "model/mamba_config.h"

namespace mq::format {

struct ExpectedTensor {
  std::string name;
  // nullopt: the tensor must exist but its stored shape depends on the quantized storage
  // (e.g. packed 4-bit weights), which that format's loader checks.
  std::optional<std::vector<int64_t>> shape;
};

// Float checkpoints (Hugging Face layout): every tensor LoadMambaWeights reads, with its shape.
// Quantized exports (`quantized`): the same names, with the shapes of the tensors whose storage
// quantization does not change (embeddings, norms, conv bias, A_log, D, conv1d.weight).
std::vector<ExpectedTensor> ExpectedMambaTensors(const MambaConfig& config, bool quantized);

}  // namespace mq::format
