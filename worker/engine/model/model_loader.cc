#include "model/model_loader.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "quant/quantized_model_io.h"


namespace mq {

StatusOr<LoadedModel> LoadModel(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return NotFoundError(config_path + ": cannot open (is \"" + dir + "\" a model directory?)");
  std::ostringstream ss;
  ss << in.rdbuf();
  bool quantized = false;
  try {
    const nlohmann::json j = nlohmann::json::parse(ss.str());
    quantized = j.is_object() && j.contains("quantization_config");
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(config_path + ": not valid JSON: " + e.what());
  }
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
