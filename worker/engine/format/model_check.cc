#include "format/model_check.h"

#include <filesystem>
#include <optional>

#include "format/bounded_json.h"
#include "format/limits.h"
#include "format/mamba_tensors.h"
#include "format/quantization_metadata.h"
#include "format/tensor_scan.h"
#include "format/tokenizer_json.h"
#include "io/safetensors.h"

namespace mq::format {
namespace {

using json = nlohmann::json;

// Readers name the path they read; the caller knows the file by its name in the model.
Status Renamed(const Status& s, const std::map<std::string, std::string>& files) {
  std::string message = s.message();
  for (const auto& [name, path] : files) {
    if (path.empty() || path == name) continue;
    for (size_t at = message.find(path); at != std::string::npos; at = message.find(path, at + name.size()))
      message.replace(at, path.size(), name);
  }
  return Status(s.code(), message);
}

// Every id the tokenizer can produce must have a row in the embedding.
Status CheckTokenizerIds(const json& root, int64_t vocab_size) {
  const json* vocab_ptr = nullptr;
  if (auto model = root.find("model"); model != root.end() && model->is_object()) {
    if (auto v = model->find("vocab"); v != model->end()) vocab_ptr = &*v;
  }
  if (vocab_ptr == nullptr || !vocab_ptr->is_object() || vocab_ptr->empty())
    return DataLossError("model.vocab must be a non-empty object of token to id");
  const json& vocab = *vocab_ptr;
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it->is_number_integer()) return DataLossError("model.vocab entries must be integer ids");
    if (it->is_number_unsigned() ? it->get<uint64_t>() >= static_cast<uint64_t>(vocab_size)
                                 : it->get<int64_t>() < 0 || it->get<int64_t>() >= vocab_size)
      return DataLossError("model.vocab has id " + it->dump() + ", outside the model's " +
                           std::to_string(vocab_size) + " embedding rows (config.json vocab_size)");
  }
  auto added = root.find("added_tokens");
  if (added == root.end() || !added->is_array()) return OkStatus();
  for (const json& t : *added) {
    auto id = t.is_object() ? t.find("id") : t.end();
    if (id == t.end() || !id->is_number_integer()) return DataLossError("added_tokens entries need an integer id");
    if (id->is_number_unsigned() ? id->get<uint64_t>() >= static_cast<uint64_t>(vocab_size)
                                 : id->get<int64_t>() < 0 || id->get<int64_t>() >= vocab_size)
      return DataLossError("added_tokens has id " + id->dump() + ", outside the model's " +
                           std::to_string(vocab_size) + " embedding rows (config.json vocab_size)");
  }
  return OkStatus();
}

StatusOr<ModelSummary> Check(const std::map<std::string, std::string>& files, const ModelCheckOptions& options) {
  auto path_of = [&files](const std::string& name) -> std::optional<std::string> {
    auto it = files.find(name);
    if (it == files.end()) return std::nullopt;
    return it->second;
  };
  ModelSummary summary;

  // config.json: one parse, its fields read by MambaConfig and the quantization block checked.
  const auto config_path = path_of("config.json");
  if (!config_path) return InvalidArgumentError("the model has no config.json");
  MQ_ASSIGN_OR_RETURN(std::string config_text, ReadFileBounded(*config_path, kMaxConfigJsonBytes));
  MQ_ASSIGN_OR_RETURN(json config, ParseJson(config_text, "config.json", kMaxConfigJsonBytes));
  MQ_ASSIGN_OR_RETURN(summary.config, MambaConfig::FromJson(config, "config.json"));
  summary.model_type = config["model_type"].get<std::string>();
  auto qc = config.find("quantization_config");
  if (qc != config.end()) {
    summary.quantized = true;
    auto metadata = CheckQuantizationMetadata(*qc, summary.config.num_hidden_layers);
    if (!metadata.ok()) return metadata.status().WithContext("config.json");
    summary.quantization_config = *qc;
  }

  // Weights: the engine's reader, resolving file names through `files`.
  MQ_ASSIGN_OR_RETURN(SafetensorsModel tensors, SafetensorsModel::OpenResolved(path_of, "the model"));
  if (tensors.size() == 0) return InvalidArgumentError("the model's safetensors hold no tensor");
  for (const ExpectedTensor& e : ExpectedMambaTensors(summary.config, summary.quantized)) {
    const TensorView* v = tensors.Find(e.name);
    if (v == nullptr)
      return InvalidArgumentError("tensor \"" + e.name + "\", which config.json implies, is missing from the weights");
    if (e.shape && v->shape != *e.shape)
      return InvalidArgumentError(v->file + ": tensor \"" + e.name + "\" has shape " + ShapeToString(v->shape) +
                                  " but config.json implies " + ShapeToString(*e.shape));
    if (!summary.quantized && v->dtype != DType::kF32 && v->dtype != DType::kF16 && v->dtype != DType::kBF16)
      return InvalidArgumentError(v->file + ": tensor \"" + e.name + "\" has dtype " + DTypeName(v->dtype) +
                                  ", expected a floating type");
  }
  for (const std::string& name : tensors.Names()) {
    const TensorView* v = tensors.Find(name);
    summary.tensor_bytes += v->nbytes;
    if (!options.scan_values) continue;
    if (auto bad = FindNonFinite(*v))
      return InvalidArgumentError(v->file + ": tensor \"" + name + "\" holds NaN or Inf (element " +
                                  std::to_string(*bad) + ")");
  }
  summary.tensors = tensors.size();

  // tokenizer.json: bounded structure, and ids within the embedding.
  const auto tokenizer_path = path_of("tokenizer.json");
  if (!tokenizer_path) return InvalidArgumentError("the model has no tokenizer.json");
  MQ_ASSIGN_OR_RETURN(std::string tokenizer_text,
                      ReadFileBounded(*tokenizer_path, kMaxTokenizerJsonBytes, StatusCode::kDataLoss));
  MQ_ASSIGN_OR_RETURN(json tokenizer, ParseTokenizerJson(tokenizer_text, "tokenizer.json"));
  MQ_RETURN_IF_ERROR(CheckTokenizerIds(tokenizer, summary.config.vocab_size).WithContext("tokenizer.json"));
  return summary;
}

}  // namespace

StatusOr<ModelSummary> CheckModelFiles(const std::map<std::string, std::string>& files,
                                       const ModelCheckOptions& options) {
  auto summary = Check(files, options);
  if (!summary.ok()) return Renamed(summary.status(), files);
  return summary;
}

StatusOr<ModelSummary> CheckModelDirectory(const std::string& dir, const ModelCheckOptions& options) {
  namespace fs = std::filesystem;
  std::map<std::string, std::string> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    if (entry.is_regular_file(ec)) files[entry.path().filename().string()] = entry.path().string();
  }
  if (ec) return NotFoundError(dir + ": cannot list: " + ec.message());
  auto summary = Check(files, options);  // messages keep the real paths: the caller gave the directory
  return summary;
}

}  // namespace mq::format
