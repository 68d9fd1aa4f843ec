#include "vim/vim_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace mq {
namespace {

using json = nlohmann::json;

Status ReadInt(const json& j, const char* key, int64_t* out, const std::string& src, bool required) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    if (required) return InvalidArgumentError(src + ": \"" + key + "\" is required");
    return OkStatus();
  }
  if (!it->is_number_integer()) return InvalidArgumentError(src + ": \"" + key + "\" must be an integer");
  *out = it->get<int64_t>();
  return OkStatus();
}

// A flag that must have `expected` when present (the only configuration implemented).
Status RequireFlag(const json& j, const char* key, bool expected, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_boolean()) return InvalidArgumentError(src + ": \"" + key + "\" must be true or false");
  if (it->get<bool>() != expected)
    return UnimplementedError(src + ": \"" + key + "\": " + (expected ? "false" : "true") +
                              " is not supported (the released Vim configuration has " +
                              (expected ? "true" : "false") + ")");
  return OkStatus();
}

Status ReadBool(const json& j, const char* key, bool* out, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_boolean()) return InvalidArgumentError(src + ": \"" + key + "\" must be true or false");
  *out = it->get<bool>();
  return OkStatus();
}

// A key that derived sizes also come from: when written, it must agree with the computed value.
Status CheckDerived(const json& j, const char* key, int64_t computed, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_number_integer() || it->get<int64_t>() != computed)
    return InvalidArgumentError(src + ": \"" + key + "\" is " + it->dump() + " but the geometry gives " +
                                std::to_string(computed));
  return OkStatus();
}

Status ReadChannelVector(const json& j, const char* key, std::vector<double>* out, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_array()) return InvalidArgumentError(src + ": \"" + key + "\" must be an array of numbers");
  for (const json& v : *it) {
    if (!v.is_number() || !std::isfinite(v.get<double>()))
      return InvalidArgumentError(src + ": \"" + key + "\" must hold finite numbers");
    out->push_back(v.get<double>());
  }
  return OkStatus();
}

Status InRange(const char* name, int64_t v, int64_t lo, int64_t hi) {
  if (v < lo || v > hi)
    return InvalidArgumentError(std::string("vim config: ") + name + " = " + std::to_string(v) + " is outside [" +
                                std::to_string(lo) + ", " + std::to_string(hi) + "]");
  return OkStatus();
}

}  // namespace

Status VimConfig::Validate() const {
  MQ_RETURN_IF_ERROR(InRange("img_size", img_size, 1, kMaxImageSize));
  MQ_RETURN_IF_ERROR(InRange("patch_size", patch_size, 1, img_size));
  MQ_RETURN_IF_ERROR(InRange("stride", stride, 1, img_size));
  MQ_RETURN_IF_ERROR(InRange("num_patches", num_patches(), 1, kMaxPatches));
  MQ_RETURN_IF_ERROR(InRange("in_chans", in_chans, 1, kMaxChannels));
  MQ_RETURN_IF_ERROR(InRange("embed_dim", embed_dim, 1, kMaxEmbedDim));
  MQ_RETURN_IF_ERROR(InRange("depth", depth, 1, kMaxDepth));
  MQ_RETURN_IF_ERROR(InRange("d_state", d_state, 1, kMaxState));
  MQ_RETURN_IF_ERROR(InRange("d_conv", d_conv, 1, kMaxConv));
  MQ_RETURN_IF_ERROR(InRange("expand", expand, 1, kMaxExpand));
  MQ_RETURN_IF_ERROR(InRange("d_inner", d_inner, 1, kMaxExpand * kMaxEmbedDim));
  MQ_RETURN_IF_ERROR(InRange("dt_rank", dt_rank, 1, d_inner));
  MQ_RETURN_IF_ERROR(InRange("num_classes", num_classes, 1, kMaxClasses));
  if (!(norm_epsilon > 0.0 && norm_epsilon < 1.0))
    return InvalidArgumentError("vim config: norm_epsilon must be in (0, 1)");
  if (!input_mean.empty() && static_cast<int64_t>(input_mean.size()) != in_chans)
    return InvalidArgumentError("vim config: input_mean needs one value per input channel");
  if (!input_std.empty() && static_cast<int64_t>(input_std.size()) != in_chans)
    return InvalidArgumentError("vim config: input_std needs one value per input channel");
  for (double s : input_std)
    if (!(s > 0.0)) return InvalidArgumentError("vim config: input_std values must be positive");
  return OkStatus();
}

StatusOr<VimConfig> VimConfig::FromJson(const json& j, const std::string& src) {
  if (!j.is_object()) return InvalidArgumentError(src + ": not a JSON object");
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string() || mt->get<std::string>() != "vim")
    return InvalidArgumentError(src + ": \"model_type\" must be \"vim\"");
  VimConfig c;
  MQ_RETURN_IF_ERROR(ReadInt(j, "img_size", &c.img_size, src, true));
  MQ_RETURN_IF_ERROR(ReadInt(j, "patch_size", &c.patch_size, src, true));
  c.stride = c.patch_size;
  MQ_RETURN_IF_ERROR(ReadInt(j, "stride", &c.stride, src, false));
  MQ_RETURN_IF_ERROR(ReadInt(j, "in_chans", &c.in_chans, src, true));
  MQ_RETURN_IF_ERROR(ReadInt(j, "embed_dim", &c.embed_dim, src, true));
  MQ_RETURN_IF_ERROR(ReadInt(j, "depth", &c.depth, src, true));
  MQ_RETURN_IF_ERROR(ReadInt(j, "num_classes", &c.num_classes, src, true));
  MQ_RETURN_IF_ERROR(ReadInt(j, "d_state", &c.d_state, src, false));
  MQ_RETURN_IF_ERROR(ReadInt(j, "d_conv", &c.d_conv, src, false));
  MQ_RETURN_IF_ERROR(ReadInt(j, "expand", &c.expand, src, false));
  // Range-check the inputs of the derived sizes before computing them.
  MQ_RETURN_IF_ERROR(InRange("embed_dim", c.embed_dim, 1, kMaxEmbedDim).WithContext(src));
  MQ_RETURN_IF_ERROR(InRange("expand", c.expand, 1, kMaxExpand).WithContext(src));
  c.d_inner = c.expand * c.embed_dim;
  MQ_RETURN_IF_ERROR(ReadInt(j, "d_inner", &c.d_inner, src, false));
  c.dt_rank = (c.embed_dim + 15) / 16;
  auto dr = j.find("dt_rank");
  if (dr != j.end() && !dr->is_null() && !(dr->is_string() && dr->get<std::string>() == "auto")) {
    if (!dr->is_number_integer()) return InvalidArgumentError(src + ": \"dt_rank\" must be an integer or \"auto\"");
    c.dt_rank = dr->get<int64_t>();
  }
  if (j.contains("norm_epsilon") && !j["norm_epsilon"].is_null()) {
    if (!j["norm_epsilon"].is_number()) return InvalidArgumentError(src + ": \"norm_epsilon\" must be a number");
    c.norm_epsilon = j["norm_epsilon"].get<double>();
  }
  MQ_RETURN_IF_ERROR(ReadBool(j, "if_divide_out", &c.if_divide_out, src));
  if (!j.contains("if_divide_out")) MQ_RETURN_IF_ERROR(ReadBool(j, "if_devide_out", &c.if_divide_out, src));
  MQ_RETURN_IF_ERROR(ReadBool(j, "conv_bias", &c.conv_bias, src));
  MQ_RETURN_IF_ERROR(ReadChannelVector(j, "input_mean", &c.input_mean, src));
  MQ_RETURN_IF_ERROR(ReadChannelVector(j, "input_std", &c.input_std, src));

  // Architecture flags: only the released configuration is implemented.
  if (j.contains("bimamba_type") && !j["bimamba_type"].is_null() &&
      !(j["bimamba_type"].is_string() && j["bimamba_type"].get<std::string>() == "v2"))
    return UnimplementedError(src + ": \"bimamba_type\" " + j["bimamba_type"].dump() + " is not supported (only \"v2\")");
  MQ_RETURN_IF_ERROR(RequireFlag(j, "if_cls_token", true, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "use_middle_cls_token", true, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "use_double_cls_token", false, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "if_abs_pos_embed", true, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "if_rope", false, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "if_bidirectional", false, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "rms_norm", true, src));
  MQ_RETURN_IF_ERROR(RequireFlag(j, "bias", false, src));
  if (j.contains("init_layer_scale") && !j["init_layer_scale"].is_null())
    return UnimplementedError(src + ": \"init_layer_scale\" (layer scale gamma) is not supported");
  if (j.contains("head_input") && !j["head_input"].is_null() && j["head_input"] != "cls_token")
    return UnimplementedError(src + ": \"head_input\" must be \"cls_token\"");
  if (j.contains("activation") && !j["activation"].is_null() && j["activation"] != "silu")
    return UnimplementedError(src + ": \"activation\" must be \"silu\"");
  auto ratio = j.find("flip_img_sequences_ratio");
  if (ratio != j.end() && ratio->is_number() && ratio->get<double>() > 0.0)
    return UnimplementedError(src + ": \"flip_img_sequences_ratio\" > 0 is not supported");

  MQ_RETURN_IF_ERROR(c.Validate().WithContext(src));
  MQ_RETURN_IF_ERROR(CheckDerived(j, "grid_size", c.grid_size(), src));
  MQ_RETURN_IF_ERROR(CheckDerived(j, "num_patches", c.num_patches(), src));
  MQ_RETURN_IF_ERROR(CheckDerived(j, "seq_len", c.seq_len(), src));
  MQ_RETURN_IF_ERROR(CheckDerived(j, "cls_token_index", c.cls_token_index(), src));
  return c;
}

StatusOr<VimConfig> VimConfig::FromFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return NotFoundError(path + ": cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  json j;
  try {
    j = json::parse(ss.str());
  } catch (const json::exception& e) {
    return InvalidArgumentError(path + ": not valid JSON: " + e.what());
  }
  return FromJson(j, path);
}

json VimConfig::ToJson() const {
  json j = {{"model_type", "vim"},
            {"img_size", img_size},
            {"patch_size", patch_size},
            {"stride", stride},
            {"in_chans", in_chans},
            {"embed_dim", embed_dim},
            {"depth", depth},
            {"d_state", d_state},
            {"d_conv", d_conv},
            {"expand", expand},
            {"d_inner", d_inner},
            {"dt_rank", dt_rank},
            {"num_classes", num_classes},
            {"grid_size", grid_size()},
            {"num_patches", num_patches()},
            {"seq_len", seq_len()},
            {"cls_token_index", cls_token_index()},
            {"bimamba_type", "v2"},
            {"if_divide_out", if_divide_out},
            {"if_cls_token", true},
            {"use_middle_cls_token", true},
            {"use_double_cls_token", false},
            {"if_abs_pos_embed", true},
            {"if_rope", false},
            {"if_bidirectional", false},
            {"rms_norm", true},
            {"fused_add_norm", true},
            {"residual_in_fp32", true},
            {"norm_epsilon", norm_epsilon},
            {"conv_bias", conv_bias},
            {"bias", false},
            {"init_layer_scale", nullptr},
            {"final_pool_type", "mean"},
            {"head_input", "cls_token"},
            {"activation", "silu"},
            {"torch_dtype", "float32"}};
  if (!input_mean.empty()) j["input_mean"] = input_mean;
  if (!input_std.empty()) j["input_std"] = input_std;
  return j;
}

bool IsVimConfigFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  json j = json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("model_type") && j["model_type"] == "vim";
}

StatusOr<VimConfig> ReleasedVimConfig(const std::string& name) {
  VimConfig c;  // defaults: Vim-tiny, patch 16, stride 16, ImageNet
  if (name == "tiny") {
    c.embed_dim = 192;
  } else if (name == "small") {
    c.embed_dim = 384;
  } else if (name == "base") {
    c.embed_dim = 768;
  } else {
    return NotFoundError("no released Vim shape \"" + name + "\" (tiny, small, base)");
  }
  c.d_inner = c.expand * c.embed_dim;
  c.dt_rank = (c.embed_dim + 15) / 16;
  c.input_mean = {0.485, 0.456, 0.406};
  c.input_std = {0.229, 0.224, 0.225};
  return c;
}

}  // namespace mq
