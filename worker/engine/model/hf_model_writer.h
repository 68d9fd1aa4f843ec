// Writes a float Mamba-1 model in the Hugging Face layout (config.json, one F32
// model.safetensors, the source's tokenizer files), staged and renamed into place.
#pragma once

#include <map>
#include <string>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {

// `w` must be float (no quantized linears, no fused transforms that the HF format cannot hold:
// gate_scale, state_rotation, online input rotations). config.json is the source's with dtype
// float32 and tie_word_embeddings as `w` has it; `extra_files` (name → text) are written beside.
// `out_dir` must not exist or be empty.
Status WriteFloatHfModel(const MambaWeights& w, const std::string& source_dir, const std::string& out_dir,
                         const std::map<std::string, std::string>& extra_files = {});

}  // namespace mq
