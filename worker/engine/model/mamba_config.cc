#include "model/mamba_config.h"

#include <cstdint>

#include <nlohmann/json.hpp>

#include "format/bounded_json.h"
#include "format/limits.h"

namespace mq {
namespace {

using json = nlohmann::json;

constexpr int64_t kMaxHiddenSize = int64_t{1} << 16;

Status ReadInt(const json& j, const char* key, int64_t* out, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();  // keep the default
  // Unsigned values past int64's range would wrap: refused, not converted.
  if (!it->is_number_integer() || (it->is_number_unsigned() && it->get<uint64_t>() > uint64_t{INT64_MAX}))
    return InvalidArgumentError(src + ": \"" + key + "\" must be an integer");
  *out = it->get<int64_t>();
  return OkStatus();
}

Status ReadBool(const json& j, const char* key, bool* out, const std::string& src) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return OkStatus();
  if (!it->is_boolean()) return InvalidArgumentError(src + ": \"" + key + "\" must be true or false");
  *out = it->get<bool>();
  return OkStatus();
}

}  // namespace

StatusOr<MambaConfig> MambaConfig::FromJsonText(const std::string& text, const std::string& src) {
  MQ_ASSIGN_OR_RETURN(json j, format::ParseJson(text, src, format::kMaxConfigJsonBytes));
  return FromJson(j, src);
}

StatusOr<MambaConfig> MambaConfig::FromJson(const json& j, const std::string& src) {
  if (!j.is_object()) return InvalidArgumentError(src + ": not a JSON object");
  auto mt = j.find("model_type");
  if (mt == j.end() || !mt->is_string())
    return InvalidArgumentError(src + ": no \"model_type\"; only Mamba-1 (\"mamba\") models are supported");
  const std::string model_type = mt->get<std::string>();
  if (model_type != "mamba")
    return Status(StatusCode::kUnimplemented, src + ": model_type \"" + model_type +
                                                  "\" is not supported; only Mamba-1 (\"mamba\") is");

  MambaConfig c;
  MQ_RETURN_IF_ERROR(ReadInt(j, "vocab_size", &c.vocab_size, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "hidden_size", &c.hidden_size, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "state_size", &c.state_size, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "num_hidden_layers", &c.num_hidden_layers, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "conv_kernel", &c.conv_kernel, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "expand", &c.expand, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "bos_token_id", &c.bos_token_id, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "eos_token_id", &c.eos_token_id, src));
  MQ_RETURN_IF_ERROR(ReadInt(j, "pad_token_id", &c.pad_token_id, src));
  MQ_RETURN_IF_ERROR(ReadBool(j, "residual_in_fp32", &c.residual_in_fp32, src));
  MQ_RETURN_IF_ERROR(ReadBool(j, "tie_word_embeddings", &c.tie_word_embeddings, src));
  MQ_RETURN_IF_ERROR(ReadBool(j, "use_bias", &c.use_bias, src));
  MQ_RETURN_IF_ERROR(ReadBool(j, "use_conv_bias", &c.use_conv_bias, src));

  // Bounded before the products below, which would otherwise overflow (undefined behaviour).
  if (c.hidden_size <= 0 || c.hidden_size > kMaxHiddenSize)
    return InvalidArgumentError(src + ": hidden_size out of range (1..65536)");
  if (c.expand <= 0 || c.expand > 64) return InvalidArgumentError(src + ": expand out of range (1..64)");
  c.intermediate_size = c.expand * c.hidden_size;  // HF: int(expand * hidden_size) unless given
  MQ_RETURN_IF_ERROR(ReadInt(j, "intermediate_size", &c.intermediate_size, src));

  c.time_step_rank = (c.hidden_size + 15) / 16;  // "auto" = ceil(hidden / 16)
  auto tsr = j.find("time_step_rank");
  if (tsr != j.end() && !tsr->is_null()) {
    if (tsr->is_string()) {
      if (tsr->get<std::string>() != "auto")
        return InvalidArgumentError(src + ": time_step_rank must be an integer or \"auto\"");
    } else if (tsr->is_number_integer() && !(tsr->is_number_unsigned() && tsr->get<uint64_t>() > uint64_t{INT64_MAX})) {
      c.time_step_rank = tsr->get<int64_t>();
    } else {
      return InvalidArgumentError(src + ": time_step_rank must be an integer or \"auto\"");
    }
  }
  auto eps = j.find("layer_norm_epsilon");
  if (eps != j.end() && !eps->is_null()) {
    if (!eps->is_number()) return InvalidArgumentError(src + ": layer_norm_epsilon must be a number");
    c.layer_norm_epsilon = eps->get<double>();
  }
  auto act = j.find("hidden_act");
  if (act != j.end() && !act->is_null() && (!act->is_string() || act->get<std::string>() != "silu"))
    return Status(StatusCode::kUnimplemented, src + ": hidden_act must be \"silu\"");
  MQ_RETURN_IF_ERROR(c.Validate().WithContext(src));
  return c;
}

Status MambaConfig::Validate() const {
  auto bounded = [](int64_t v, int64_t hi) { return v > 0 && v <= hi; };
  if (!bounded(vocab_size, 1 << 24)) return InvalidArgumentError("vocab_size out of range (1..16M)");
  if (!bounded(hidden_size, kMaxHiddenSize)) return InvalidArgumentError("hidden_size out of range (1..65536)");
  if (!bounded(intermediate_size, 1 << 18)) return InvalidArgumentError("intermediate_size out of range");
  if (!bounded(state_size, 1024)) return InvalidArgumentError("state_size out of range (1..1024)");
  if (!bounded(num_hidden_layers, 1024)) return InvalidArgumentError("num_hidden_layers out of range (1..1024)");
  if (!bounded(conv_kernel, 64)) return InvalidArgumentError("conv_kernel out of range (1..64)");
  if (!bounded(time_step_rank, 1 << 16)) return InvalidArgumentError("time_step_rank out of range");
  if (!(layer_norm_epsilon > 0 && layer_norm_epsilon < 1)) return InvalidArgumentError("layer_norm_epsilon out of range");
  if (eos_token_id < 0 || eos_token_id >= vocab_size) return InvalidArgumentError("eos_token_id outside the vocabulary");
  return OkStatus();
}

StatusOr<MambaConfig> MambaConfig::FromFile(const std::string& path) {
  MQ_ASSIGN_OR_RETURN(std::string text, format::ReadFileBounded(path, format::kMaxConfigJsonBytes));
  return FromJsonText(text, path);
}

}  // namespace mq
