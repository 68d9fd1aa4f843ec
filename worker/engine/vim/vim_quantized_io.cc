#include "vim/vim_quantized_io.h"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "io/staged_directory.h"
#include "quant/hadamard.h"
#include "quant/online_rotation.h"
#include "quant/quant_spec.h"

namespace mq {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

void AddLinear(SafetensorsWriter& out, const std::string& prefix, const Linear& l) {
  if (l.quant) {
    out.AddI8(prefix + ".weight", {l.out_features, l.in_features}, l.quant->qweight);
    out.AddF32(prefix + ".weight_scale", {l.out_features}, l.quant->weight_scale);
    if (l.quant->act_mode == ActScaleMode::kPerTensorStatic) out.AddF32(prefix + ".input_scale", {1}, {l.quant->act_scale});
  } else {
    out.AddF32(prefix + ".weight", {l.out_features, l.in_features}, l.weight);
  }
  if (!l.bias.empty()) out.AddF32(prefix + ".bias", {l.out_features}, l.bias);
}

void AddBranch(SafetensorsWriter& st, const std::string& m, const std::string& sfx, const MambaLayerWeights& L,
               int64_t E, int64_t N, int64_t K) {
  if (!L.conv_weight_scale.empty()) {
    // Scope full: conv_weight holds q·s exactly; store q as I8 with its per-channel scales.
    std::vector<int8_t> q(L.conv_weight.size());
    for (int64_t c = 0; c < E; ++c)
      for (int64_t k = 0; k < K; ++k)
        q[c * K + k] = static_cast<int8_t>(std::nearbyint(L.conv_weight[c * K + k] / L.conv_weight_scale[c]));
    st.AddI8(m + ".conv1d" + sfx + ".weight", {E, 1, K}, q);
    st.AddF32(m + ".conv1d" + sfx + ".weight_scale", {E}, L.conv_weight_scale);
  } else {
    st.AddF32(m + ".conv1d" + sfx + ".weight", {E, 1, K}, L.conv_weight);
  }
  st.AddF32(m + ".conv1d" + sfx + ".bias", {E}, L.conv_bias);
  if (!L.state_rotation.empty()) st.AddF32(m + ".state_rotation" + sfx, {N, N}, L.state_rotation);
  AddLinear(st, m + ".x_proj" + sfx, L.x_proj);
  AddLinear(st, m + ".dt_proj" + sfx, L.dt_proj);
  st.AddF32(m + (sfx.empty() ? ".A_log" : ".A_b_log"), {E, N}, L.A_log);
  st.AddF32(m + ".D" + sfx, {E}, L.D);
}

class Reader {
 public:
  Reader(const SafetensorsModel& t, const quant::QuantSpec& spec) : t_(t), spec_(spec) {}

  StatusOr<std::vector<float>> F32(const std::string& name, const std::vector<int64_t>& shape) {
    MQ_ASSIGN_OR_RETURN(const TensorView* v, t_.Require(name, shape));
    used_.insert(name);
    if (v->dtype != DType::kF32) return DataLossError(v->file + ": tensor \"" + name + "\" must be F32");
    std::vector<float> x = ToFloat32(*v);
    for (float f : x)
      if (!std::isfinite(f)) return DataLossError(v->file + ": tensor \"" + name + "\" holds NaN or Inf");
    return x;
  }

  StatusOr<Linear> QuantLinear(const std::string& prefix, int64_t out, int64_t in, bool bias) {
    Linear l;
    l.in_features = in;
    l.out_features = out;
    MQ_ASSIGN_OR_RETURN(const TensorView* v, t_.Require(prefix + ".weight", {out, in}));
    used_.insert(prefix + ".weight");
    if (v->dtype != DType::kI8) return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" must be I8");
    LinearQuant q;
    q.weight_bits = spec_.weight_bits;
    const int qmax = spec_.weight_bits == 4 ? 7 : 127;
    q.qweight.assign(reinterpret_cast<const int8_t*>(v->data), reinterpret_cast<const int8_t*>(v->data) + v->nbytes);
    for (int8_t x : q.qweight)
      if (x < -qmax || x > qmax)
        return DataLossError(v->file + ": tensor \"" + prefix + ".weight\" holds " + std::to_string(x) + ", outside the " +
                             std::to_string(spec_.weight_bits) + "-bit range");
    MQ_ASSIGN_OR_RETURN(q.weight_scale, F32(prefix + ".weight_scale", {out}));
    for (float s : q.weight_scale)
      if (!(s > 0.0f)) return DataLossError(prefix + ".weight_scale holds a non-positive scale");
    q.act_mode = spec_.act_mode;
    if (spec_.act_mode == ActScaleMode::kPerTensorStatic) {
      MQ_ASSIGN_OR_RETURN(std::vector<float> s, F32(prefix + ".input_scale", {1}));
      if (!(s[0] > 0.0f)) return DataLossError(prefix + ".input_scale is not positive");
      q.act_scale = s[0];
    }
    l.quant = std::move(q);
    if (bias) {
      MQ_ASSIGN_OR_RETURN(l.bias, F32(prefix + ".bias", {out}));
    }
    return l;
  }

  StatusOr<Linear> FloatLinear(const std::string& prefix, int64_t out, int64_t in, bool bias) {
    Linear l;
    l.in_features = in;
    l.out_features = out;
    MQ_ASSIGN_OR_RETURN(l.weight, F32(prefix + ".weight", {out, in}));
    if (bias) {
      MQ_ASSIGN_OR_RETURN(l.bias, F32(prefix + ".bias", {out}));
    }
    return l;
  }

  Status Branch(const VimConfig& c, const std::string& m, const std::string& sfx, MambaLayerWeights& L) {
    const int64_t E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
    if (spec_.scope_full) {
      // INT8 conv weights with per-channel scales; conv_weight keeps q·s, as the quantizer leaves it.
      const std::string name = m + ".conv1d" + sfx + ".weight";
      MQ_ASSIGN_OR_RETURN(const TensorView* v, t_.Require(name, {E, 1, K}));
      used_.insert(name);
      if (v->dtype != DType::kI8) return DataLossError(v->file + ": tensor \"" + name + "\" must be I8 in scope full");
      MQ_ASSIGN_OR_RETURN(L.conv_weight_scale, F32(m + ".conv1d" + sfx + ".weight_scale", {E}));
      for (float s : L.conv_weight_scale)
        if (!(s > 0.0f)) return DataLossError(m + ".conv1d" + sfx + ".weight_scale holds a non-positive scale");
      const int8_t* q = reinterpret_cast<const int8_t*>(v->data);
      L.conv_weight.resize(static_cast<size_t>(E * K));
      for (int64_t c = 0; c < E; ++c)
        for (int64_t k = 0; k < K; ++k) {
          if (q[c * K + k] < -127) return DataLossError(v->file + ": tensor \"" + name + "\" holds -128");
          L.conv_weight[c * K + k] = static_cast<float>(q[c * K + k]) * L.conv_weight_scale[c];
        }
      L.quantize_conv_input = true;
      L.quantize_output_product = true;
      L.state_scale_per_channel = spec_.state_scale_per_channel;
    } else {
      MQ_ASSIGN_OR_RETURN(L.conv_weight, F32(m + ".conv1d" + sfx + ".weight", {E, 1, K}));
    }
    MQ_ASSIGN_OR_RETURN(L.conv_bias, F32(m + ".conv1d" + sfx + ".bias", {E}));
    if (Has(m + ".state_rotation" + sfx)) {
      // R4 must be orthogonal: its transpose is folded into x_proj's C rows.
      MQ_ASSIGN_OR_RETURN(L.state_rotation, F32(m + ".state_rotation" + sfx, {N, N}));
      for (int64_t i = 0; i < N; ++i)
        for (int64_t j = 0; j < N; ++j) {
          double dot = 0.0;
          for (int64_t k = 0; k < N; ++k) dot += static_cast<double>(L.state_rotation[i * N + k]) * L.state_rotation[j * N + k];
          if (std::fabs(dot - (i == j ? 1.0 : 0.0)) > 1e-4)
            return DataLossError(m + ".state_rotation" + sfx + " is not orthogonal");
        }
    }
    MQ_ASSIGN_OR_RETURN(L.x_proj, QuantLinear(m + ".x_proj" + sfx, R + 2 * N, E, false));
    MQ_ASSIGN_OR_RETURN(L.dt_proj, QuantLinear(m + ".dt_proj" + sfx, E, R, true));
    MQ_ASSIGN_OR_RETURN(L.A_log, F32(m + (sfx.empty() ? ".A_log" : ".A_b_log"), {E, N}));
    L.A.resize(L.A_log.size());
    for (size_t j = 0; j < L.A.size(); ++j) L.A[j] = -std::exp(L.A_log[j]);
    MQ_ASSIGN_OR_RETURN(L.D, F32(m + ".D" + sfx, {E}));
    return OkStatus();
  }

  bool Has(const std::string& name) const { return t_.Find(name) != nullptr; }

  Status CheckAllUsed() const {
    for (const std::string& n : t_.Names())
      if (used_.count(n) == 0) return DataLossError("tensor \"" + n + "\" is not part of this quantized Vim model");
    return OkStatus();
  }

 private:
  const SafetensorsModel& t_;
  const quant::QuantSpec& spec_;
  std::set<std::string> used_;
};

}  // namespace

bool HasQuantizationConfig(const std::string& config_path) {
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  const json j = json::parse(ss.str(), nullptr, false);
  return j.is_object() && j.contains("quantization_config") && j["quantization_config"].is_object();
}

StatusOr<VimWeights> LoadVimModelWeights(const std::string& dir, std::string* quantization_config_json) {
  if (quantization_config_json != nullptr) quantization_config_json->clear();
  const std::string config_path = (fs::path(dir) / "config.json").string();
  MQ_ASSIGN_OR_RETURN(VimConfig config, VimConfig::FromFile(config_path));
  if (HasQuantizationConfig(config_path)) return LoadQuantizedVim(dir, quantization_config_json);
  MQ_ASSIGN_OR_RETURN(SafetensorsModel tensors, SafetensorsModel::OpenDirectory(dir));
  return LoadVimWeights(config, tensors);
}

Status ExportQuantizedVim(const VimWeights& w, const json& source_config, const json& quantization_config,
                          const std::string& out_dir, const json& report) {
  std::error_code ec;
  const fs::path out(out_dir);
  if (fs::exists(out, ec) && !fs::is_empty(out, ec))
    return Status(StatusCode::kAlreadyExists, out_dir + ": output directory exists and is not empty");
  json qc = quantization_config;
  qc["online_transforms"] = json::array();
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const auto& t = w.layers[i].mixer.out_proj.input_transform;
    const auto* h = dynamic_cast<const quant::HadamardRowTransform*>(t.get());
    if (t && h == nullptr) return UnimplementedError("only Hadamard online transforms can be exported");
    if (h != nullptr)
      qc["online_transforms"].push_back(
          {{"layer", i}, {"site", "out_proj_input"}, {"kind", "random_hadamard"}, {"size", h->size()}, {"seed", h->seed()}});
  }
  json config = source_config.is_object() ? source_config : json::object();
  const json arch = w.config.ToJson();  // named: items() would outlive a temporary
  for (const auto& [key, value] : arch.items()) config[key] = value;
  config["quantization_config"] = qc;

  SafetensorsWriter st;
  st.SetMetadata("format", "mambaquant-serve");
  const VimConfig& c = w.config;
  const int64_t D = c.embed_dim, E = c.d_inner, N = c.d_state, K = c.d_conv, P = c.patch_size;
  st.AddF32(vim_keys::kClsToken, {1, 1, D}, w.cls_token);
  st.AddF32(vim_keys::kPosEmbed, {1, c.seq_len(), D}, w.pos_embed);
  st.AddF32(vim_keys::kPatchWeight, {D, c.in_chans, P, P}, w.patch_weight);
  st.AddF32(vim_keys::kPatchBias, {D}, w.patch_bias);
  for (size_t i = 0; i < w.layers.size(); ++i) {
    const VimLayerWeights& lw = w.layers[i];
    const std::string p = vim_keys::Layer(static_cast<int64_t>(i)), m = p + ".mixer";
    st.AddF32(p + ".norm.weight", {D}, lw.mixer.norm);
    AddLinear(st, m + ".in_proj", lw.mixer.in_proj);
    AddLinear(st, m + ".out_proj", lw.mixer.out_proj);
    if (!lw.mixer.gate_scale.empty()) st.AddF32(m + ".gate_scale", {E}, lw.mixer.gate_scale);
    AddBranch(st, m, "", lw.mixer, E, N, K);
    AddBranch(st, m, "_b", lw.backward, E, N, K);
  }
  st.AddF32(vim_keys::kNormF, {D}, w.norm_f);
  AddLinear(st, vim_keys::kHead, w.head);

  MQ_ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));
  MQ_RETURN_IF_ERROR(st.Write(staged.File("model.safetensors").string()));
  MQ_RETURN_IF_ERROR(staged.WriteText("config.json", config.dump(2) + "\n"));
  MQ_RETURN_IF_ERROR(staged.WriteText("quant_report.json", report.dump(2) + "\n"));
  return staged.Commit();
}

StatusOr<VimWeights> LoadQuantizedVim(const std::string& dir, std::string* quantization_config_json) {
  const fs::path config_path = fs::path(dir) / "config.json";
  std::ifstream in(config_path, std::ios::binary);
  if (!in) return NotFoundError(config_path.string() + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  json config = json::parse(ss.str(), nullptr, false);
  if (config.is_discarded()) return InvalidArgumentError(config_path.string() + ": not valid JSON");
  MQ_ASSIGN_OR_RETURN(VimConfig c, VimConfig::FromJson(config, config_path.string()));
  if (!config.contains("quantization_config") || !config["quantization_config"].is_object())
    return InvalidArgumentError(config_path.string() + ": no quantization_config block");
  const json& qc = config["quantization_config"];
  auto spec_or = quant::QuantSpec::FromJson(qc);
  if (!spec_or.ok()) return spec_or.status().WithContext(config_path.string());
  const quant::QuantSpec spec = *spec_or;
  if (!spec.w8_layers.empty())
    return UnimplementedError(config_path.string() + ": a Vim export holds one weight width (no w8_layers)");
  if (qc.value("weight_storage", "int8_unpacked") != "int8_unpacked")
    return UnimplementedError(config_path.string() + ": Vim weights are stored int8_unpacked, not " +
                              qc.value("weight_storage", std::string("?")));
  if (quantization_config_json != nullptr) *quantization_config_json = qc.dump();

  std::map<int64_t, json> transforms;
  if (qc.contains("online_transforms")) {
    if (!qc["online_transforms"].is_array()) return DataLossError(config_path.string() + ": online_transforms must be a list");
    for (const json& o : qc["online_transforms"]) {
      if (!o.is_object() || !o.contains("layer") || !o["layer"].is_number_integer() || o["layer"].get<int64_t>() < 0 ||
          o["layer"].get<int64_t>() >= c.depth)
        return DataLossError(config_path.string() + ": an online transform names no block of this model");
      transforms[o["layer"].get<int64_t>()] = o;
    }
  }

  MQ_ASSIGN_OR_RETURN(SafetensorsModel t, SafetensorsModel::OpenDirectory(dir));
  Reader r(t, spec);
  VimWeights w;
  w.config = c;
  const int64_t D = c.embed_dim, E = c.d_inner, P = c.patch_size;
  MQ_ASSIGN_OR_RETURN(w.cls_token, r.F32(vim_keys::kClsToken, {1, 1, D}));
  MQ_ASSIGN_OR_RETURN(w.pos_embed, r.F32(vim_keys::kPosEmbed, {1, c.seq_len(), D}));
  MQ_ASSIGN_OR_RETURN(w.patch_weight, r.F32(vim_keys::kPatchWeight, {D, c.in_chans, P, P}));
  MQ_ASSIGN_OR_RETURN(w.patch_bias, r.F32(vim_keys::kPatchBias, {D}));
  w.layers.resize(static_cast<size_t>(c.depth));
  for (int64_t i = 0; i < c.depth; ++i) {
    VimLayerWeights& lw = w.layers[static_cast<size_t>(i)];
    const std::string p = vim_keys::Layer(i), m = p + ".mixer";
    MQ_ASSIGN_OR_RETURN(lw.mixer.norm, r.F32(p + ".norm.weight", {D}));
    MQ_ASSIGN_OR_RETURN(lw.mixer.in_proj, r.QuantLinear(m + ".in_proj", 2 * E, D, false));
    MQ_ASSIGN_OR_RETURN(lw.mixer.out_proj, r.QuantLinear(m + ".out_proj", D, E, false));
    if (r.Has(m + ".gate_scale")) {
      MQ_ASSIGN_OR_RETURN(lw.mixer.gate_scale, r.F32(m + ".gate_scale", {E}));
      for (float s : lw.mixer.gate_scale)
        if (!(s > 0.0f)) return DataLossError(m + ".gate_scale holds a non-positive value");
    }
    MQ_RETURN_IF_ERROR(r.Branch(c, m, "", lw.mixer));
    MQ_RETURN_IF_ERROR(r.Branch(c, m, "_b", lw.backward));
    auto tr = transforms.find(i);
    if (tr != transforms.end()) {
      const json& o = tr->second;
      if (o.value("kind", "") != "random_hadamard" || o.value("site", "") != "out_proj_input" ||
          o.value("size", int64_t{-1}) != E || !o.contains("seed") || !o["seed"].is_number_unsigned())
        return DataLossError(config_path.string() + ": online transform of block " + std::to_string(i) +
                             " is not an out_proj_input random_hadamard of size " + std::to_string(E) + " with a seed");
      const uint64_t seed = o["seed"].get<uint64_t>();
      MQ_ASSIGN_OR_RETURN(quant::RandomHadamard h, quant::RandomHadamard::Create(E, seed));
      lw.mixer.out_proj.input_transform = std::make_shared<quant::HadamardRowTransform>(std::move(h), seed);
    }
  }
  MQ_ASSIGN_OR_RETURN(w.norm_f, r.F32(vim_keys::kNormF, {D}));
  MQ_ASSIGN_OR_RETURN(w.head, r.FloatLinear(vim_keys::kHead, c.num_classes, D, true));
  MQ_RETURN_IF_ERROR(r.CheckAllUsed());
  return w;
}

}  // namespace mq
