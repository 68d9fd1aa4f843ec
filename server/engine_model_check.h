// The registry's check of an uploaded model, with the engine's own readers: the model is refused
// at commit time (INVALID_ARGUMENT naming the file and the problem) unless the engine could load
// it later. The model-format library (worker/engine/format/model_check.h) reads each file once —
// config.json, the safetensors index and headers (offsets, sizes, dtypes, no overlap), the
// tensors' shapes against config.json, every weight for NaN/Inf, tokenizer.json's bounded
// structure — and for quantized exports QuantSpec judges the quantization_config block.
#pragma once

#include <map>
#include <string>

#include "absl/status/statusor.h"

namespace mq::server {

// `files`: the model's top-level artifact path → local path of its blob. Returns config.json's
// model_type.
absl::StatusOr<std::string> CheckModelWithEngine(const std::map<std::string, std::string>& files);

// The model-format library's check alone (no quantization semantics).
absl::StatusOr<std::string> CheckModelFormat(const std::map<std::string, std::string>& files);

}  // namespace mq::server
