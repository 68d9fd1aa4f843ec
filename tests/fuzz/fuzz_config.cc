// config.json of a Mamba model (and the quantization_config block of a quantized export): never
// crashes or throws, and an accepted config is within the ranges the engine's arithmetic needs.
#include <cstdint>
#include <string>

#include <nlohmann/json.hpp>

#include "format/bounded_json.h"
#include "format/mamba_tensors.h"
#include "format/quantization_metadata.h"
#include "fuzz_check.h"
#include "model/mamba_config.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto config = mq::MambaConfig::FromJsonText(text, "config.json");
  if (!config.ok()) return 0;
  MQ_FUZZ_CHECK(config->Validate().ok());
  const auto expected = mq::format::ExpectedMambaTensors(*config, /*quantized=*/false);
  MQ_FUZZ_CHECK(expected.size() >= 2);
  for (const auto& e : expected)
    for (int64_t d : *e.shape) MQ_FUZZ_CHECK(d > 0);
  auto json = mq::format::ParseJson(text, "config.json", mq::format::kMaxConfigJsonBytes);
  MQ_FUZZ_CHECK(json.ok());
  auto qc = json->find("quantization_config");
  if (qc != json->end()) {
    auto metadata = mq::format::CheckQuantizationMetadata(*qc, config->num_hidden_layers);
    if (metadata.ok()) {
      for (const auto& [layer, t] : metadata->online_transforms)
        MQ_FUZZ_CHECK(layer >= 0 && layer < config->num_hidden_layers && t.size >= 0);
    }
  }
  return 0;
}
