// The check of a whole model — config.json, the safetensors files (single or sharded, with
// their index), tokenizer.json — that the server runs when an upload is committed, so that a
// model is refused before it is registered rather than when a job loads it. Each file is read
// by the same reader the engine loads it with.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "model/mamba_config.h"
#include "util/status.h"

namespace mq::format {

struct ModelCheckOptions {
  // Read every floating-point weight and refuse NaN or Inf (one sequential pass over the data).
  bool scan_values = true;
};

struct ModelSummary {
  std::string model_type;
  MambaConfig config;
  bool quantized = false;
  nlohmann::json quantization_config;  // the block, for the caller's semantic check; null if none
  size_t tensors = 0;
  uint64_t tensor_bytes = 0;
};

// `files`: the model's file name (as in the directory: "config.json", "model.safetensors",
// shard names) → the path to read it from. Errors name the model's file, never the local path;
// their code is the reader's (INVALID_ARGUMENT, DATA_LOSS, NOT_FOUND, UNIMPLEMENTED).
//
// Refused: a missing or malformed config.json (not a Mamba-1 config, a field of the wrong type or
// out of range, nesting past kMaxJsonDepth, a malformed quantization_config); no weights, an index
// naming a shard that is absent or a tensor its shard lacks; a corrupt safetensors header; a
// tensor of the config missing or of another shape; NaN or Inf in a floating-point tensor; a
// missing tokenizer.json or one whose structure is outside the bounds or whose ids do not fit
// the embedding.
StatusOr<ModelSummary> CheckModelFiles(const std::map<std::string, std::string>& files,
                                       const ModelCheckOptions& options = {});

// The same for a directory (every regular file in it, by name).
StatusOr<ModelSummary> CheckModelDirectory(const std::string& dir, const ModelCheckOptions& options = {});

}  // namespace mq::format
