// The quantized model format: a Hugging Face-style directory with config.json carrying a
// `quantization_config` block, model.safetensors with I8 weights, F32 `weight_scale` tensors
// and the small extra vectors (S-SiLU scales, state rotations), the tokenizer files and the
// quantization report. See docs/quantization.md ("Storage format").
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "model/mamba_weights.h"
#include "quant/quant_spec.h"
#include "quant/quantized_format.h"
#include "util/status.h"

namespace mq::quant {

// Writes `w` (quantized by QuantizeModelWeights) to `out_dir`, which must not exist or be
// empty. The directory appears whole or not at all (written beside it, then renamed).
// Tokenizer and generation files are copied from `source_dir`. `format_version`
// (quant/quantized_format.h) chooses the layout: the current one packs 4-bit weights two per byte
// (model/int4_pack.h); 1 writes them one per int8, for readers that predate version 2.
Status ExportQuantizedModel(const MambaWeights& w, const QuantSpec& spec, const std::string& source_dir,
                            const std::string& out_dir, const nlohmann::json& report,
                            int format_version = kQuantizedFormatVersion);

// Loads a directory written by ExportQuantizedModel. `quantization_config_json` receives the
// config block. Corrupt or inconsistent files give a clear error.
StatusOr<MambaWeights> LoadQuantizedModel(const std::string& dir, std::string* quantization_config_json = nullptr);

}  // namespace mq::quant
