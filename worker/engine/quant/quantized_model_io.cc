#include "quant/quantized_model_io.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "format/bounded_json.h"
#include "format/quantization_metadata.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/staged_directory.h"
#include "model/int4_pack.h"
#include "quant/hadamard.h"
#include "quant/online_rotation.h"

namespace mq::quant {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// config.json through the model-format reader: size and nesting bounded, errors as Status.
StatusOr<json> ReadJsonFile(const fs::path& p) {
  MQ_ASSIGN_OR_RETURN(std::string text, format::ReadFileBounded(p.string(), format::kMaxConfigJsonBytes));
  return format::ParseJson(text, p.string(), format::kMaxConfigJsonBytes);
}

// A linear's tensors: float, or quantized weights with their scales. 4-bit weights are packed
// (U8 [out, ⌈in/2⌉], model/int4_pack.h) from format version 2 on, one int8 each before.
// `bits`: the width this linear must have (QuantSpec::LayerWeightBits of its layer).
Status AddLinear(SafetensorsWriter& out, const std::string& prefix, const Linear& l, int bits, int format_version) {
  if (l.quant) {
    const LinearQuant& q = *l.quant;
    if (q.weight_bits != bits)
      return InvalidArgumentError(prefix + " holds " + std::to_string(q.weight_bits) + "-bit weights where the spec says " +
                                  std::to_string(bits));
    if (q.qweight.size() != static_cast<size_t>(l.out_features * l.in_features) ||
        q.weight_scale.size() != static_cast<size_t>(l.out_features))
      return InvalidArgumentError(prefix + ": quantized weights do not match its shape");
    if (std::string(WeightStorageName(format_version, q.weight_bits)) == "int4_packed") {
      const int64_t row_bytes = Int4RowBytes(l.in_features);
      MQ_ASSIGN_OR_RETURN(std::vector<uint8_t> packed,
                          PackInt4Rows(q.qweight.data(), l.out_features, l.in_features, row_bytes));
      out.Add(prefix + ".weight", DType::kU8, {l.out_features, row_bytes}, std::move(packed));
    } else {
      out.AddI8(prefix + ".weight", {l.out_features, l.in_features}, q.qweight);
    }
    out.AddF32(prefix + ".weight_scale", {l.out_features}, q.weight_scale);
    if (q.act_mode == ActScaleMode::kPerTensorStatic) out.AddF32(prefix + ".input_scale", {1}, {q.act_scale});
  } else {
    out.AddF32(prefix + ".weight", {l.out_features, l.in_features}, l.weight);
  }
  if (!l.bias.empty()) out.AddF32(prefix + ".bias", {l.out_features}, l.bias);
  return OkStatus();
}

StatusOr<std::vector<float>> ReadF32(const SafetensorsModel& t, const std::string& name, const std::vector<int64_t>& shape) {
  MQ_ASSIGN_OR_RETURN(const TensorView* v, t.Require(name, shape));
  if (v->dtype != DType::kF32) return DataLossError(v->file + ": tensor \"" + name + "\" must be F32");
  std::vector<float> x = ToFloat32(*v);
  for (float f : x)
    if (!std::isfinite(f)) return DataLossError(v->file + ": tensor \"" + name + "\" holds NaN or Inf");
  return x;
}

// `bits`: the linear's weight width (QuantSpec::LayerWeightBits). `packed`: 4-bit weights as U8
// [out, ⌈in/2⌉] (weight_storage int4_packed), else I8 [out, in].
StatusOr<Linear> ReadLinear(const SafetensorsModel& t, const std::string& prefix, int64_t out, int64_t in,
                            bool quantized, const QuantSpec& spec, int bits, bool has_bias, bool packed) {
  Linear l;
  l.in_features = in;
  l.out_features = out;
  if (!quantized) {
    MQ_ASSIGN_OR_RETURN(l.weight, ReadF32(t, prefix + ".weight", {out, in}));
  } else {
    LinearQuant q;
    q.weight_bits = bits;
    if (packed) {
      // Shape first, then dtype, then the byte count against the shape: nothing is read past the
      // tensor, and every nibble is checked while unpacking (model/int4_pack.h).
      const int64_t row_bytes = Int4RowBytes(in);
      MQ_ASSIGN_OR_RETURN(const TensorView* v, t.Require(prefix + ".weight", {out, row_bytes}));
      if (v->dtype != DType::kU8)
        return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" must be U8 (packed 4-bit weights)");
      if (v->nbytes != static_cast<size_t>(out * row_bytes))
        return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" holds " + std::to_string(v->nbytes) +
                             " bytes, expected " + std::to_string(out * row_bytes));
      q.qweight.resize(static_cast<size_t>(out * in));
      const Status s = UnpackInt4Rows(v->data, static_cast<int64_t>(v->nbytes), out, in, row_bytes, q.qweight.data());
      if (!s.ok()) return Status(StatusCode::kDataLoss, v->file + ": tensor \"" + prefix + ".weight\": " + s.message());
    } else {
      MQ_ASSIGN_OR_RETURN(const TensorView* v, t.Require(prefix + ".weight", {out, in}));
      if (v->dtype != DType::kI8) return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" must be I8");
      const int qmax = bits == 4 ? kInt4MaxLevel : 127;
      q.qweight.assign(reinterpret_cast<const int8_t*>(v->data), reinterpret_cast<const int8_t*>(v->data) + v->nbytes);
      for (int8_t x : q.qweight)
        if (x < -qmax || x > qmax)
          return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" holds " + std::to_string(x) +
                               ", outside the " + std::to_string(bits) + "-bit range");
    }
    MQ_ASSIGN_OR_RETURN(q.weight_scale, ReadF32(t, prefix + ".weight_scale", {out}));
    for (float s : q.weight_scale)
      if (!(s > 0.0f)) return DataLossError(prefix + ".weight_scale holds a non-positive scale");
    q.act_mode = spec.act_mode;
    if (spec.act_mode == ActScaleMode::kPerTensorStatic) {
      MQ_ASSIGN_OR_RETURN(std::vector<float> s, ReadF32(t, prefix + ".input_scale", {1}));
      if (!(s[0] > 0.0f)) return DataLossError(prefix + ".input_scale is not positive");
      q.act_scale = s[0];
    }
    l.quant = std::move(q);
  }
  if (has_bias) {
    MQ_ASSIGN_OR_RETURN(l.bias, ReadF32(t, prefix + ".bias", {out}));
  }
  return l;
}

}  // namespace

Status ExportQuantizedModel(const MambaWeights& w, const QuantSpec& spec, const std::string& source_dir,
                            const std::string& out_dir, const json& report, int format_version) {
  if (!IsReadableFormatVersion(format_version))
    return InvalidArgumentError("cannot write quantized format version " + std::to_string(format_version) + " (" +
                                std::to_string(kOldestQuantizedFormatVersion) + " to " +
                                std::to_string(kQuantizedFormatVersion) + ")");
  std::error_code ec;
  const fs::path out(out_dir);
  if (fs::exists(out, ec) && !fs::is_empty(out, ec))
    return Status(StatusCode::kAlreadyExists, out_dir + ": output directory exists and is not empty");
  if (!spec.w8_layers.empty() && format_version < kMixedWidthFormatVersion)
    return InvalidArgumentError("w8_layers need quantized format version " + std::to_string(kMixedWidthFormatVersion) +
                                " or later; asked for " + std::to_string(format_version));
  if (!spec.w8_layers.empty() && spec.w8_layers.back() >= static_cast<int>(w.layers.size()))
    return InvalidArgumentError("w8_layers names a layer the model does not have");
  MQ_ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));

  MQ_ASSIGN_OR_RETURN(json config, ReadJsonFile(fs::path(source_dir) / "config.json"));
  config["tie_word_embeddings"] = w.config.tie_word_embeddings;
  config["dtype"] = "float32";
  json qc = spec.ToJson();
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const auto* h = dynamic_cast<const HadamardRowTransform*>(w.layers[i].out_proj.input_transform.get());
    if (w.layers[i].out_proj.input_transform && h == nullptr)
      return UnimplementedError("only Hadamard online transforms can be exported");
    if (h != nullptr)
      qc["online_transforms"].push_back(
          {{"layer", i}, {"site", "out_proj_input"}, {"kind", "random_hadamard"}, {"size", h->size()}, {"seed", h->seed()}});
  }
  qc["format_version"] = format_version;
  qc["weight_storage"] = WeightStorageName(format_version, spec.weight_bits);
  config["quantization_config"] = qc;

  SafetensorsWriter st;
  st.SetMetadata("format", "mambaquant-serve");
  const int64_t d = w.d(), E = w.E(), N = w.N(), K = w.K(), V = w.V();
  st.AddF32("backbone.embeddings.weight", {V, d}, w.embeddings);
  st.AddF32("backbone.norm_f.weight", {d}, w.norm_f);
  if (!w.config.tie_word_embeddings)
    MQ_RETURN_IF_ERROR(AddLinear(st, "lm_head", w.lm_head, spec.weight_bits, format_version));
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const MambaLayerWeights& L = w.layers[i];
    const std::string p = "backbone.layers." + std::to_string(i);
    const std::string m = p + ".mixer";
    const int bits = spec.LayerWeightBits(static_cast<int64_t>(i));
    st.AddF32(p + ".norm.weight", {d}, L.norm);
    MQ_RETURN_IF_ERROR(AddLinear(st, m + ".in_proj", L.in_proj, bits, format_version));
    if (!L.conv_weight_scale.empty()) {
      std::vector<int8_t> q(L.conv_weight.size());
      for (int64_t c = 0; c < E; ++c)
        for (int64_t k = 0; k < K; ++k)
          q[c * K + k] = static_cast<int8_t>(std::nearbyint(L.conv_weight[c * K + k] / L.conv_weight_scale[c]));
      st.AddI8(m + ".conv1d.weight", {E, 1, K}, q);
      st.AddF32(m + ".conv1d.weight_scale", {E}, L.conv_weight_scale);
    } else {
      st.AddF32(m + ".conv1d.weight", {E, 1, K}, L.conv_weight);
    }
    st.AddF32(m + ".conv1d.bias", {E}, L.conv_bias);
    MQ_RETURN_IF_ERROR(AddLinear(st, m + ".x_proj", L.x_proj, bits, format_version));
    MQ_RETURN_IF_ERROR(AddLinear(st, m + ".dt_proj", L.dt_proj, bits, format_version));
    st.AddF32(m + ".A_log", {E, N}, L.A_log);
    st.AddF32(m + ".D", {E}, L.D);
    MQ_RETURN_IF_ERROR(AddLinear(st, m + ".out_proj", L.out_proj, bits, format_version));
    if (!L.gate_scale.empty()) st.AddF32(m + ".gate_scale", {E}, L.gate_scale);
    if (!L.state_rotation.empty()) st.AddF32(m + ".state_rotation", {N, N}, L.state_rotation);
  }
  MQ_RETURN_IF_ERROR(st.Write(staged.File("model.safetensors").string()));
  MQ_RETURN_IF_ERROR(staged.WriteText("config.json", config.dump(2) + "\n"));
  MQ_RETURN_IF_ERROR(staged.WriteText("quant_report.json", report.dump(2) + "\n"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"})
    MQ_RETURN_IF_ERROR(staged.CopyIfExists(fs::path(source_dir) / f, f));
  return staged.Commit();
}

StatusOr<MambaWeights> LoadQuantizedModel(const std::string& dir, std::string* quantization_config_json) {
  const fs::path config_path = fs::path(dir) / "config.json";
  MQ_ASSIGN_OR_RETURN(json config, ReadJsonFile(config_path));
  MQ_ASSIGN_OR_RETURN(MambaConfig cfg, MambaConfig::FromJson(config, config_path.string()));
  if (!config.contains("quantization_config") || !config["quantization_config"].is_object())
    return InvalidArgumentError(config_path.string() + ": no quantization_config block");
  const json& qc = config["quantization_config"];
  // Every field's type checked before any value is read (format/quantization_metadata.h).
  auto metadata = format::CheckQuantizationMetadata(qc, cfg.num_hidden_layers);
  if (!metadata.ok()) return metadata.status().WithContext(config_path.string());
  auto spec_or = QuantSpec::FromJson(qc);
  if (!spec_or.ok()) return spec_or.status().WithContext(config_path.string());
  const QuantSpec spec = *spec_or;
  // FromJson accepted the version; the storage must be the one that version uses for these bits
  // (version 1 exports may predate the field: they stored every weight one per int8).
  const int version = qc.at("format_version").get<int>();
  const std::string expected_storage = WeightStorageName(version, spec.weight_bits);
  const json storage = qc.contains("weight_storage") ? qc["weight_storage"] : json(version == 1 ? expected_storage : "");
  if (!storage.is_string() || storage.get<std::string>() != expected_storage)
    return DataLossError(config_path.string() + ": quantization_config weight_storage " + storage.dump() +
                         " does not match format_version " + std::to_string(version) + " with " +
                         std::to_string(spec.weight_bits) + "-bit weights (expected \"" + expected_storage + "\")");
  // The storage names how weight_bits-wide layers are kept; a layer in w8_layers is stored as
  // 8-bit weights are (quantized_format.h, version 3).
  const bool packed_model = expected_storage == "int4_packed";
  if (quantization_config_json != nullptr) *quantization_config_json = qc.dump();

  MQ_ASSIGN_OR_RETURN(SafetensorsModel t, SafetensorsModel::OpenDirectory(dir));
  MambaWeights w;
  w.config = cfg;
  const int64_t d = cfg.hidden_size, E = cfg.intermediate_size, N = cfg.state_size, R = cfg.time_step_rank;
  const int64_t K = cfg.conv_kernel, V = cfg.vocab_size;
  MQ_ASSIGN_OR_RETURN(w.embeddings, ReadF32(t, "backbone.embeddings.weight", {V, d}));
  MQ_ASSIGN_OR_RETURN(w.norm_f, ReadF32(t, "backbone.norm_f.weight", {d}));
  if (cfg.tie_word_embeddings) {
    w.lm_head.in_features = d;
    w.lm_head.out_features = V;
    w.lm_head.weight = w.embeddings;
  } else {
    MQ_ASSIGN_OR_RETURN(w.lm_head, ReadLinear(t, "lm_head", V, d, spec.quantize_lm_head, spec, spec.weight_bits, false,
                                              packed_model));
  }
  const std::map<int64_t, format::OnlineTransform>& transforms = metadata->online_transforms;

  w.layers.resize(static_cast<size_t>(cfg.num_hidden_layers));
  for (int64_t i = 0; i < cfg.num_hidden_layers; ++i) {
    MambaLayerWeights& L = w.layers[static_cast<size_t>(i)];
    const std::string p = "backbone.layers." + std::to_string(i);
    const std::string m = p + ".mixer";
    const int bits = spec.LayerWeightBits(i);
    const bool packed = packed_model && bits == 4;
    MQ_ASSIGN_OR_RETURN(L.norm, ReadF32(t, p + ".norm.weight", {d}));
    MQ_ASSIGN_OR_RETURN(L.in_proj, ReadLinear(t, m + ".in_proj", 2 * E, d, true, spec, bits, cfg.use_bias, packed));
    MQ_ASSIGN_OR_RETURN(const TensorView* conv, t.Require(m + ".conv1d.weight", {E, 1, K}));
    if (spec.scope_full) {
      if (conv->dtype != DType::kI8) return DataLossError(conv->file + ": " + m + ".conv1d.weight must be I8 in scope full");
      MQ_ASSIGN_OR_RETURN(L.conv_weight_scale, ReadF32(t, m + ".conv1d.weight_scale", {E}));
      L.conv_weight.resize(static_cast<size_t>(E * K));
      const int8_t* q = reinterpret_cast<const int8_t*>(conv->data);
      for (int64_t c = 0; c < E; ++c)
        for (int64_t k = 0; k < K; ++k) L.conv_weight[c * K + k] = static_cast<float>(q[c * K + k]) * L.conv_weight_scale[c];
      L.quantize_conv_input = true;
      L.quantize_output_product = true;
      L.state_scale_per_channel = spec.state_scale_per_channel;
    } else {
      MQ_ASSIGN_OR_RETURN(L.conv_weight, ReadF32(t, m + ".conv1d.weight", {E, 1, K}));
    }
    MQ_ASSIGN_OR_RETURN(L.conv_bias, ReadF32(t, m + ".conv1d.bias", {E}));
    MQ_ASSIGN_OR_RETURN(L.x_proj, ReadLinear(t, m + ".x_proj", R + 2 * N, E, true, spec, bits, false, packed));
    MQ_ASSIGN_OR_RETURN(L.dt_proj, ReadLinear(t, m + ".dt_proj", E, R, true, spec, bits, true, packed));
    MQ_ASSIGN_OR_RETURN(L.A_log, ReadF32(t, m + ".A_log", {E, N}));
    L.A.resize(L.A_log.size());
    for (size_t j = 0; j < L.A.size(); ++j) L.A[j] = -std::exp(L.A_log[j]);
    MQ_ASSIGN_OR_RETURN(L.D, ReadF32(t, m + ".D", {E}));
    MQ_ASSIGN_OR_RETURN(L.out_proj, ReadLinear(t, m + ".out_proj", d, E, true, spec, bits, cfg.use_bias, packed));
    if (t.Find(m + ".gate_scale") != nullptr) {
      MQ_ASSIGN_OR_RETURN(L.gate_scale, ReadF32(t, m + ".gate_scale", {E}));
      for (float s : L.gate_scale)
        if (!(s > 0.0f)) return DataLossError(m + ".gate_scale holds a non-positive value");
    }
    if (t.Find(m + ".state_rotation") != nullptr) {
      MQ_ASSIGN_OR_RETURN(L.state_rotation, ReadF32(t, m + ".state_rotation", {N, N}));
    }
    auto tr = transforms.find(i);
    if (tr != transforms.end()) {
      const format::OnlineTransform& o = tr->second;
      if (o.kind != "random_hadamard" || o.size != E)
        return DataLossError(config_path.string() + ": online transform of layer " + std::to_string(i) +
                             " is not a random_hadamard of size " + std::to_string(E) + " with a seed");
      const uint64_t seed = o.seed;
      MQ_ASSIGN_OR_RETURN(RandomHadamard h, RandomHadamard::Create(E, seed));
      L.out_proj.input_transform = std::make_shared<HadamardRowTransform>(std::move(h), seed);
    }
  }
  return w;
}

}  // namespace mq::quant
