#include "model/model_loader.h"

#include <filesystem>

#include <nlohmann/json.hpp>

#include "format/bounded_json.h"
#include "quant/quantized_model_io.h"


namespace mq {

StatusOr<LoadedModel> LoadModel(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  // The model-format reader: size and nesting bounded (format/limits.h), errors as Status.
  auto text = format::ReadFileBounded(config_path, format::kMaxConfigJsonBytes);
  if (!text.ok() && text.status().code() == StatusCode::kNotFound)
    return NotFoundError(config_path + ": cannot open (is \"" + dir + "\" a model directory?)");
  if (!text.ok()) return text.status();
  MQ_ASSIGN_OR_RETURN(nlohmann::json j, format::ParseJson(*text, config_path, format::kMaxConfigJsonBytes));
  const bool quantized = j.is_object() && j.contains("quantization_config");
  LoadedModel m;
  if (quantized) {
    MQ_ASSIGN_OR_RETURN(m.weights, quant::LoadQuantizedModel(dir, &m.quantization_config_json));
    m.quantized = true;
  } else {
    MQ_ASSIGN_OR_RETURN(m.weights, LoadMambaWeights(dir));
  }
  return m;
}

}  // namespace mq
