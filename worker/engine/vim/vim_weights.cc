#include "vim/vim_weights.h"

#include <cmath>
#include <filesystem>
#include <set>

namespace mq {
namespace {

// Records every name read so that left-over tensors can be reported.
class TensorReader {
 public:
  explicit TensorReader(const SafetensorsModel& t) : t_(t) {}

  StatusOr<std::vector<float>> Float(const std::string& name, const std::vector<int64_t>& shape) {
    MQ_ASSIGN_OR_RETURN(const TensorView* v, t_.Require(name, shape));
    used_.insert(name);
    if (v->dtype != DType::kF32 && v->dtype != DType::kF16 && v->dtype != DType::kBF16)
      return InvalidArgumentError(v->file + ": tensor \"" + name + "\" has dtype " + DTypeName(v->dtype) +
                                  ", expected a floating type");
    std::vector<float> out = ToFloat32(*v);
    for (float x : out)
      if (!std::isfinite(x)) return InvalidArgumentError(v->file + ": tensor \"" + name + "\" holds NaN or Inf");
    return out;
  }

  StatusOr<Linear> Dense(const std::string& prefix, int64_t out, int64_t in, bool bias) {
    Linear l;
    l.in_features = in;
    l.out_features = out;
    MQ_ASSIGN_OR_RETURN(l.weight, Float(prefix + ".weight", {out, in}));
    if (bias) {
      MQ_ASSIGN_OR_RETURN(l.bias, Float(prefix + ".bias", {out}));
    }
    return l;
  }

  Status CheckAllUsed() const {
    for (const std::string& n : t_.Names())
      if (used_.count(n) == 0)
        return InvalidArgumentError("tensor \"" + n + "\" is not part of a Vim model with this config.json "
                                    "(depth, key names or a quantized file in a float directory?)");
    return OkStatus();
  }

 private:
  const SafetensorsModel& t_;
  std::set<std::string> used_;
};

// The Mamba parts of one direction: "" for the forward branch, "_b" for the backward one.
Status ReadBranch(TensorReader& r, const VimConfig& c, const std::string& m, const std::string& sfx,
                  MambaLayerWeights& L) {
  const int64_t E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv;
  MQ_ASSIGN_OR_RETURN(L.conv_weight, r.Float(m + ".conv1d" + sfx + ".weight", {E, 1, K}));
  if (c.conv_bias) {
    MQ_ASSIGN_OR_RETURN(L.conv_bias, r.Float(m + ".conv1d" + sfx + ".bias", {E}));
  } else {
    L.conv_bias.assign(static_cast<size_t>(E), 0.0f);
  }
  MQ_ASSIGN_OR_RETURN(L.x_proj, r.Dense(m + ".x_proj" + sfx, R + 2 * N, E, false));
  MQ_ASSIGN_OR_RETURN(L.dt_proj, r.Dense(m + ".dt_proj" + sfx, E, R, true));
  // The official names: A_log / A_b_log, D / D_b.
  MQ_ASSIGN_OR_RETURN(L.A_log, r.Float(m + (sfx.empty() ? ".A_log" : ".A_b_log"), {E, N}));
  L.A.resize(L.A_log.size());
  for (size_t j = 0; j < L.A.size(); ++j) L.A[j] = -std::exp(L.A_log[j]);
  MQ_ASSIGN_OR_RETURN(L.D, r.Float(m + ".D" + sfx, {E}));
  return OkStatus();
}

}  // namespace

namespace vim_keys {
std::string Layer(int64_t i) { return "layers." + std::to_string(i); }
}  // namespace vim_keys

StatusOr<VimWeights> LoadVimWeights(const std::string& dir) {
  MQ_ASSIGN_OR_RETURN(VimConfig config, VimConfig::FromFile((std::filesystem::path(dir) / "config.json").string()));
  MQ_ASSIGN_OR_RETURN(SafetensorsModel tensors, SafetensorsModel::OpenDirectory(dir));
  return LoadVimWeights(config, tensors);
}

StatusOr<VimWeights> LoadVimWeights(const VimConfig& c, const SafetensorsModel& t) {
  MQ_RETURN_IF_ERROR(c.Validate());
  VimWeights w;
  w.config = c;
  TensorReader r(t);
  const int64_t D = c.embed_dim, E = c.d_inner, P = c.patch_size, L = c.seq_len();
  MQ_ASSIGN_OR_RETURN(w.cls_token, r.Float(vim_keys::kClsToken, {1, 1, D}));
  MQ_ASSIGN_OR_RETURN(w.pos_embed, r.Float(vim_keys::kPosEmbed, {1, L, D}));
  MQ_ASSIGN_OR_RETURN(w.patch_weight, r.Float(vim_keys::kPatchWeight, {D, c.in_chans, P, P}));
  MQ_ASSIGN_OR_RETURN(w.patch_bias, r.Float(vim_keys::kPatchBias, {D}));
  w.layers.resize(static_cast<size_t>(c.depth));
  for (int64_t i = 0; i < c.depth; ++i) {
    VimLayerWeights& lw = w.layers[static_cast<size_t>(i)];
    const std::string p = vim_keys::Layer(i), m = p + ".mixer";
    MQ_ASSIGN_OR_RETURN(lw.mixer.norm, r.Float(p + ".norm.weight", {D}));
    MQ_ASSIGN_OR_RETURN(lw.mixer.in_proj, r.Dense(m + ".in_proj", 2 * E, D, false));
    MQ_ASSIGN_OR_RETURN(lw.mixer.out_proj, r.Dense(m + ".out_proj", D, E, false));
    MQ_RETURN_IF_ERROR(ReadBranch(r, c, m, "", lw.mixer));
    MQ_RETURN_IF_ERROR(ReadBranch(r, c, m, "_b", lw.backward));
  }
  MQ_ASSIGN_OR_RETURN(w.norm_f, r.Float(vim_keys::kNormF, {D}));
  MQ_ASSIGN_OR_RETURN(w.head, r.Dense(vim_keys::kHead, c.num_classes, D, true));
  MQ_RETURN_IF_ERROR(r.CheckAllUsed());
  return w;
}

}  // namespace mq
