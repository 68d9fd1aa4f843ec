#include "model/mamba_weights.h"

#include <cmath>
#include <filesystem>

namespace mq {
namespace {

StatusOr<std::vector<float>> ReadFloat(const SafetensorsModel& t, const std::string& name,
                                       const std::vector<int64_t>& shape) {
  MQ_ASSIGN_OR_RETURN(const TensorView* v, t.Require(name, shape));
  if (v->dtype != DType::kF32 && v->dtype != DType::kF16 && v->dtype != DType::kBF16)
    return InvalidArgumentError(v->file + ": tensor \"" + name + "\" has dtype " + DTypeName(v->dtype) +
                                ", expected a floating type");
  std::vector<float> out = ToFloat32(*v);
  for (float x : out)
    if (!std::isfinite(x)) return InvalidArgumentError(v->file + ": tensor \"" + name + "\" holds NaN or Inf");
  return out;
}

StatusOr<Linear> ReadLinear(const SafetensorsModel& t, const std::string& prefix, int64_t out, int64_t in,
                            bool has_bias) {
  Linear l;
  l.in_features = in;
  l.out_features = out;
  MQ_ASSIGN_OR_RETURN(l.weight, ReadFloat(t, prefix + ".weight", {out, in}));
  if (has_bias) {
    MQ_ASSIGN_OR_RETURN(l.bias, ReadFloat(t, prefix + ".bias", {out}));
  }
  return l;
}

}  // namespace

StatusOr<MambaWeights> LoadMambaWeights(const std::string& dir) {
  MQ_ASSIGN_OR_RETURN(MambaConfig config, MambaConfig::FromFile((std::filesystem::path(dir) / "config.json").string()));
  MQ_ASSIGN_OR_RETURN(SafetensorsModel tensors, SafetensorsModel::OpenDirectory(dir));
  return LoadMambaWeights(config, tensors);
}

StatusOr<MambaWeights> LoadMambaWeights(const MambaConfig& config, const SafetensorsModel& t) {
  MambaWeights w;
  w.config = config;
  const int64_t d = config.hidden_size, E = config.intermediate_size, N = config.state_size;
  const int64_t R = config.time_step_rank, K = config.conv_kernel, V = config.vocab_size;
  MQ_ASSIGN_OR_RETURN(w.embeddings, ReadFloat(t, "backbone.embeddings.weight", {V, d}));
  w.layers.resize(static_cast<size_t>(config.num_hidden_layers));
  for (int64_t i = 0; i < config.num_hidden_layers; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i);
    MambaLayerWeights& L = w.layers[static_cast<size_t>(i)];
    MQ_ASSIGN_OR_RETURN(L.norm, ReadFloat(t, p + ".norm.weight", {d}));
    MQ_ASSIGN_OR_RETURN(L.in_proj, ReadLinear(t, p + ".mixer.in_proj", 2 * E, d, config.use_bias));
    MQ_ASSIGN_OR_RETURN(L.conv_weight, ReadFloat(t, p + ".mixer.conv1d.weight", {E, 1, K}));
    if (config.use_conv_bias) {
      MQ_ASSIGN_OR_RETURN(L.conv_bias, ReadFloat(t, p + ".mixer.conv1d.bias", {E}));
    } else {
      L.conv_bias.assign(static_cast<size_t>(E), 0.0f);
    }
    MQ_ASSIGN_OR_RETURN(L.x_proj, ReadLinear(t, p + ".mixer.x_proj", R + 2 * N, E, false));
    MQ_ASSIGN_OR_RETURN(L.dt_proj, ReadLinear(t, p + ".mixer.dt_proj", E, R, true));
    MQ_ASSIGN_OR_RETURN(L.A_log, ReadFloat(t, p + ".mixer.A_log", {E, N}));
    L.A.resize(L.A_log.size());
    for (size_t j = 0; j < L.A.size(); ++j) L.A[j] = -std::exp(L.A_log[j]);
    MQ_ASSIGN_OR_RETURN(L.D, ReadFloat(t, p + ".mixer.D", {E}));
    MQ_ASSIGN_OR_RETURN(L.out_proj, ReadLinear(t, p + ".mixer.out_proj", d, E, config.use_bias));
  }
  MQ_ASSIGN_OR_RETURN(w.norm_f, ReadFloat(t, "backbone.norm_f.weight", {d}));
  w.lm_head.in_features = d;
  w.lm_head.out_features = V;
  if (config.tie_word_embeddings) {
    w.lm_head.weight = w.embeddings;
  } else {
    MQ_ASSIGN_OR_RETURN(w.lm_head.weight, ReadFloat(t, "lm_head.weight", {V, d}));
  }
  return w;
}

}  // namespace mq
