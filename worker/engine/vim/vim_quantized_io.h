// The quantized Vim export: the float directory's layout (official key names, config.json with
// model_type "vim") plus a `quantization_config` block; quantized linears as I8 `.weight` with F32
// `.weight_scale` (and `.input_scale` for static activation scales), the S-SiLU vector as
// `layers.{i}.mixer.gate_scale`, and each block's online R2 as a seeded random Hadamard in
// `quantization_config.online_transforms` (site "out_proj_input"). Format version 1 storage
// (quant/quantized_format.h): every quantized weight one int8 per element. Scope full also stores
// conv1d / conv1d_b as I8 `.weight` with F32 `.weight_scale`, and each direction's online R4 as the
// dense F32 `mixer.state_rotation` / `mixer.state_rotation_b` [N, N] (as the language export does).
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "util/status.h"
#include "vim/vim_weights.h"

namespace mq {

// True when the config.json at `config_path` carries a quantization_config object.
bool HasQuantizationConfig(const std::string& config_path);

// Writes `w` to `out_dir` (must not exist or be empty), whole or not at all. config.json is the
// source model's (`source_config`, its keys the engine does not read kept: id2label, input
// normalization, dataset notes) with the architecture fields of w.config and the quantization block.
Status ExportQuantizedVim(const VimWeights& w, const nlohmann::json& source_config,
                          const nlohmann::json& quantization_config, const std::string& out_dir,
                          const nlohmann::json& report);

// Loads a directory written by ExportQuantizedVim; `quantization_config_json` receives the block.
// Corrupt or inconsistent files (dtypes, shapes, out-of-range INT levels, non-positive scales, a
// transform that does not match the model) give DataLoss / InvalidArgument naming the tensor.
StatusOr<VimWeights> LoadQuantizedVim(const std::string& dir, std::string* quantization_config_json = nullptr);

// A float Vim directory or a quantized export of one, told apart by config.json's
// quantization_config block; `quantization_config_json` receives the block (empty for a float
// model). What VimModel::Load runs, and mq-server's upload check without the forward pass.
StatusOr<VimWeights> LoadVimModelWeights(const std::string& dir, std::string* quantization_config_json = nullptr);

}  // namespace mq
