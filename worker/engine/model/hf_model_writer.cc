#include "model/hf_model_writer.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "io/safetensors_writer.h"
#include "io/staged_directory.h"

namespace mq {
namespace fs = std::filesystem;

Status WriteFloatHfModel(const MambaWeights& w, const std::string& source_dir, const std::string& out_dir,
                         const std::map<std::string, std::string>& extra_files) {
  const int64_t d = w.d(), E = w.E(), N = w.N(), R = w.R(), K = w.K(), V = w.V();
  for (const MambaLayerWeights& L : w.layers) {
    if (L.in_proj.quant || L.x_proj.quant || L.dt_proj.quant || L.out_proj.quant || L.out_proj.input_transform ||
        !L.gate_scale.empty() || !L.state_rotation.empty() || L.quantize_conv_input || !L.conv_weight_scale.empty())
      return FailedPreconditionError("the Hugging Face format holds float models without fused online transforms");
  }
  std::error_code ec;
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();
  if (out.empty()) return InvalidArgumentError("output directory is empty");
  if (fs::exists(out, ec) && (!fs::is_directory(out, ec) || !fs::is_empty(out, ec)))
    return FailedPreconditionError(out_dir + ": exists and is not an empty directory; refusing to overwrite it");

  std::ifstream cin((fs::path(source_dir) / "config.json").string());
  if (!cin) return NotFoundError(source_dir + "/config.json: cannot open");
  nlohmann::ordered_json config;
  try {
    config = nlohmann::ordered_json::parse(cin);
  } catch (const nlohmann::json::exception& e) {
    return InvalidArgumentError(source_dir + "/config.json: " + e.what());
  }
  config["dtype"] = "float32";
  config["tie_word_embeddings"] = w.config.tie_word_embeddings;

  SafetensorsWriter st;
  st.SetMetadata("format", "pt");
  st.AddF32("backbone.embeddings.weight", {V, d}, w.embeddings);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const MambaLayerWeights& L = w.layers[i];
    const std::string p = "backbone.layers." + std::to_string(i);
    const std::string m = p + ".mixer";
    st.AddF32(p + ".norm.weight", {d}, L.norm);
    st.AddF32(m + ".in_proj.weight", {2 * E, d}, L.in_proj.weight);
    if (!L.in_proj.bias.empty()) st.AddF32(m + ".in_proj.bias", {2 * E}, L.in_proj.bias);
    st.AddF32(m + ".conv1d.weight", {E, 1, K}, L.conv_weight);
    if (w.config.use_conv_bias) st.AddF32(m + ".conv1d.bias", {E}, L.conv_bias);
    st.AddF32(m + ".x_proj.weight", {R + 2 * N, E}, L.x_proj.weight);
    st.AddF32(m + ".dt_proj.weight", {E, R}, L.dt_proj.weight);
    st.AddF32(m + ".dt_proj.bias", {E}, L.dt_proj.bias);
    st.AddF32(m + ".A_log", {E, N}, L.A_log);
    st.AddF32(m + ".D", {E}, L.D);
    st.AddF32(m + ".out_proj.weight", {d, E}, L.out_proj.weight);
    if (!L.out_proj.bias.empty()) st.AddF32(m + ".out_proj.bias", {d}, L.out_proj.bias);
  }
  st.AddF32("backbone.norm_f.weight", {d}, w.norm_f);
  if (!w.config.tie_word_embeddings) st.AddF32("lm_head.weight", {V, d}, w.lm_head.weight);

  MQ_ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));
  MQ_RETURN_IF_ERROR(st.Write(staged.File("model.safetensors").string()));
  MQ_RETURN_IF_ERROR(staged.WriteText("config.json", config.dump(2) + "\n"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json"})
    MQ_RETURN_IF_ERROR(staged.CopyIfExists(fs::path(source_dir) / f, f));
  for (const auto& [name, text] : extra_files) MQ_RETURN_IF_ERROR(staged.WriteText(name, text));
  return staged.Commit();
}

}  // namespace mq
