// The `quantization_config` block of a quantized export's config.json, checked for shape and
// types before anything reads a value from it: a field of the wrong type, a float where an
// integer belongs or a number out of range is a clear INVALID_ARGUMENT, never an exception or
// an undefined float-to-integer cast. Its meaning (presets, bits) is QuantSpec's to judge.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

#include "util/status.h"

namespace mq::format {

struct OnlineTransform {
  std::string site;  // "out_proj_input"
  std::string kind;  // "random_hadamard"
  int64_t size = 0;
  uint64_t seed = 0;
};

struct QuantizationMetadata {
  std::map<int64_t, OnlineTransform> online_transforms;  // by layer
};

// `qc` is the block; `num_layers` bounds the layer indices of online transforms.
StatusOr<QuantizationMetadata> CheckQuantizationMetadata(const nlohmann::json& qc, int64_t num_layers);

}  // namespace mq::format
