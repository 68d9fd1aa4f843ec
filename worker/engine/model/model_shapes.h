// The Mamba-1 family's shapes by name (state-spaces/mamba-130m … mamba-2.8b), for random-weight
// models: mq-bench builds them on the GPU, `mq-engine make-model` writes them as checkpoints.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/mamba_config.h"
#include "util/status.h"

namespace mq {

// The config of a Mamba-1 model of hidden size `d` and `layers` layers as the family defines it:
// E = 2d, N = 16, K = 4, R = ceil(d / 16), vocabulary 50280 (GPT-NeoX, padded), tied embeddings,
// RMSNorm with ε = 1e-5, residual in float32, bos = eos = pad = 0.
MambaConfig MambaFamilyConfig(int64_t d, int64_t layers);

// "130m" (768 × 24), "370m" (1024 × 48), "790m" (1536 × 48), "1.4b" (2048 × 48), "2.8b" (2560 × 64),
// and "tiny" (64 × 2, for tests), in that order.
const std::vector<std::string>& ModelShapeNames();

// The config of a named shape; InvalidArgument listing the known names for any other name.
StatusOr<MambaConfig> ModelShapeConfig(const std::string& name);

}  // namespace mq
