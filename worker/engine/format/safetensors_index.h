// model.safetensors.index.json: which shard file holds each tensor of a sharded checkpoint.
#pragma once

#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace mq::format {

struct SafetensorsIndex {
  std::map<std::string, std::string> tensor_to_shard;  // tensor name → shard file name
  std::vector<std::string> shards;                     // distinct shard names, sorted
};

// Parses the index text (DATA_LOSS naming `source` for anything malformed): a JSON object with
// a non-empty "weight_map" object of tensor name → shard file name; names pass
// CheckTensorName, shards CheckPlainFileName (a shard never leaves the model's directory).
StatusOr<SafetensorsIndex> ParseSafetensorsIndex(std::string_view text, const std::string& source);

}  // namespace mq::format
