#include "format/safetensors_index.h"

#include <set>

#include "format/bounded_json.h"
#include "format/limits.h"
#include "format/safe_name.h"

namespace mq::format {

StatusOr<SafetensorsIndex> ParseSafetensorsIndex(std::string_view text, const std::string& source) {
  MQ_ASSIGN_OR_RETURN(nlohmann::json index, ParseJson(text, source, kMaxIndexJsonBytes, StatusCode::kDataLoss));
  auto wm = index.is_object() ? index.find("weight_map") : index.end();
  if (!index.is_object() || wm == index.end() || !wm->is_object())
    return DataLossError(source + ": no \"weight_map\" object");
  if (wm->empty()) return DataLossError(source + ": \"weight_map\" lists no tensor");
  if (wm->size() > kMaxTensorsPerFile * 4)
    return DataLossError(source + ": \"weight_map\" lists " + std::to_string(wm->size()) + " tensors, too many");
  SafetensorsIndex out;
  std::set<std::string> shards;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    Status s = CheckTensorName(it.key(), "weight_map tensor");
    if (!s.ok()) return DataLossError(source + ": " + s.message());
    if (!it.value().is_string())
      return DataLossError(source + ": weight_map entry for " + Printable(it.key()) + " is not a string");
    const std::string& shard = it.value().get_ref<const std::string&>();
    s = CheckPlainFileName(shard, "shard");
    if (!s.ok()) return DataLossError(source + ": " + s.message());
    shards.insert(shard);
    if (shards.size() > kMaxShards)
      return DataLossError(source + ": more than " + std::to_string(kMaxShards) + " shards");
    out.tensor_to_shard.emplace(it.key(), shard);
  }
  out.shards.assign(shards.begin(), shards.end());
  return out;
}

}  // namespace mq::format
