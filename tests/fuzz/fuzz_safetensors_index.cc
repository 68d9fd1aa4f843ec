// model.safetensors.index.json: what the parser accepts names only plain shard files and safe
// tensor names.
#include <cstdint>
#include <string_view>

#include "format/safe_name.h"
#include "format/safetensors_index.h"
#include "fuzz_check.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto index = mq::format::ParseSafetensorsIndex(std::string_view(reinterpret_cast<const char*>(data), size),
                                                 "model.safetensors.index.json");
  if (!index.ok()) return 0;
  MQ_FUZZ_CHECK(!index->tensor_to_shard.empty());
  for (const auto& [tensor, shard] : index->tensor_to_shard) {
    MQ_FUZZ_CHECK(mq::format::CheckTensorName(tensor, "t").ok());
    MQ_FUZZ_CHECK(mq::format::CheckPlainFileName(shard, "s").ok());
    MQ_FUZZ_CHECK(shard.find('/') == std::string::npos && shard != "..");
  }
  return 0;
}
