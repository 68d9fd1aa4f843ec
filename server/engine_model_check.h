// The registry's deep check of an uploaded model, done with the engine's own readers: the model
// is refused at commit time (INVALID_ARGUMENT naming the file and the problem) unless the engine
// could load it later — a Mamba-1 config.json it accepts, every safetensors file fully valid
// (offsets, sizes, dtypes, no overlap), and for quantized exports a quantization_config it knows.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"

namespace mq::server {

// `files`: artifact path → local path of its blob.
absl::Status CheckModelWithEngine(const std::map<std::string, std::string>& files);

}  // namespace mq::server
