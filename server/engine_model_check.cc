#include "engine_model_check.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "model/mamba_config.h"
#include "quant/quant_spec.h"

namespace mq::server {
namespace {

absl::Status Invalid(const std::string& file, const mq::Status& s) {
  return absl::InvalidArgumentError(file + ": " + s.message());
}

}  // namespace

absl::Status CheckModelWithEngine(const std::map<std::string, std::string>& files) {
  auto config = files.find("config.json");
  if (config == files.end()) return absl::InvalidArgumentError("the model has no config.json");
  std::ifstream in(config->second, std::ios::binary);
  std::ostringstream text;
  text << in.rdbuf();
  auto cfg = mq::MambaConfig::FromJsonText(text.str(), "config.json");
  if (!cfg.ok()) return absl::InvalidArgumentError(cfg.status().message());
  const nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
  if (j.is_object() && j.contains("quantization_config")) {
    auto spec = mq::quant::QuantSpec::FromJson(j["quantization_config"]);
    if (!spec.ok()) return Invalid("config.json", spec.status());
  }
  int safetensors = 0;
  for (const auto& [name, path] : files) {
    if (name.size() < 12 || name.compare(name.size() - 12, 12, ".safetensors") != 0) continue;
    ++safetensors;
    auto f = mq::SafetensorsFile::Open(path);
    if (!f.ok()) {
      // The engine names the blob path; the user knows the file by its artifact name.
      std::string message = f.status().message();
      const size_t at = message.find(path);
      if (at != std::string::npos) message.replace(at, path.size(), name);
      return absl::InvalidArgumentError(message);
    }
  }
  if (safetensors == 0) return absl::InvalidArgumentError("the model has no .safetensors file");
  return absl::OkStatus();
}

}  // namespace mq::server
