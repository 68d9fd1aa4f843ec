#include "format/quantization_metadata.h"

#include <initializer_list>

#include "format/limits.h"

namespace mq::format {
namespace {

using json = nlohmann::json;

enum class Kind { kString, kBool, kNumber, kInteger, kUnsigned };

bool Matches(const json& v, Kind kind) {
  switch (kind) {
    case Kind::kString: return v.is_string();
    case Kind::kBool: return v.is_boolean();
    case Kind::kNumber: return v.is_number();
    case Kind::kInteger: return v.is_number_integer();
    case Kind::kUnsigned: return v.is_number_unsigned();
  }
  return false;
}

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kString: return "a string";
    case Kind::kBool: return "true or false";
    case Kind::kNumber: return "a number";
    case Kind::kInteger: return "an integer";
    case Kind::kUnsigned: return "a non-negative integer";
  }
  return "?";
}

struct Field {
  const char* key;
  Kind kind;
  bool required;
};

Status CheckFields(const json& object, const std::string& path, std::initializer_list<Field> fields) {
  for (const Field& f : fields) {
    auto it = object.find(f.key);
    if (it == object.end()) {
      if (f.required) return InvalidArgumentError(path + "." + f.key + " is missing");
      continue;
    }
    if (!Matches(*it, f.kind))
      return InvalidArgumentError(path + "." + f.key + " must be " + KindName(f.kind) + ", got " + it->type_name());
  }
  return OkStatus();
}

}  // namespace

StatusOr<QuantizationMetadata> CheckQuantizationMetadata(const json& qc, int64_t num_layers) {
  const std::string path = "quantization_config";
  if (!qc.is_object()) return InvalidArgumentError(path + " must be an object");
  MQ_RETURN_IF_ERROR(CheckFields(qc, path,
                                 {{"format_version", Kind::kInteger, true},
                                  {"weight_bits", Kind::kInteger, false},
                                  {"preset", Kind::kString, true},
                                  {"bits", Kind::kString, true},
                                  {"scope", Kind::kString, true},
                                  {"activation_granularity", Kind::kString, true},
                                  {"activation_percentile", Kind::kNumber, false},
                                  {"seed", Kind::kUnsigned, false},
                                  {"quantize_lm_head", Kind::kBool, false},
                                  {"weight_clip", Kind::kString, false},
                                  {"weight_storage", Kind::kString, false},
                                  {"state_granularity", Kind::kString, false}}));
  auto transforms = qc.find("transforms");
  if (transforms == qc.end() || !transforms->is_object())
    return InvalidArgumentError(path + ".transforms must be an object");
  MQ_RETURN_IF_ERROR(CheckFields(*transforms, path + ".transforms",
                                 {{"r1", Kind::kString, false},
                                  {"r5", Kind::kString, false},
                                  {"r2", Kind::kString, false},
                                  {"s2", Kind::kString, false},
                                  {"s4", Kind::kBool, false},
                                  {"r1_covariance", Kind::kString, false}}));

  // w8_layers (format version 3): ascending layer indices, each below num_hidden_layers.
  auto w8 = qc.find("w8_layers");
  if (w8 != qc.end() && !w8->is_null()) {
    if (!w8->is_array()) return InvalidArgumentError(path + ".w8_layers must be an array");
    if (w8->size() > static_cast<size_t>(num_layers))
      return InvalidArgumentError(path + ".w8_layers has more entries than the model has layers");
    int64_t previous = -1;
    for (size_t i = 0; i < w8->size(); ++i) {
      const json& v = (*w8)[i];
      const std::string where = path + ".w8_layers[" + std::to_string(i) + "]";
      if (!v.is_number_unsigned()) return InvalidArgumentError(where + " must be a non-negative integer");
      const uint64_t layer = v.get<uint64_t>();
      if (layer >= static_cast<uint64_t>(num_layers))
        return InvalidArgumentError(where + " = " + std::to_string(layer) + " is not below num_hidden_layers " +
                                    std::to_string(num_layers));
      if (static_cast<int64_t>(layer) <= previous)
        return InvalidArgumentError(path + ".w8_layers must be ascending without repeats");
      previous = static_cast<int64_t>(layer);
    }
  }

  QuantizationMetadata out;
  auto online = qc.find("online_transforms");
  if (online == qc.end() || online->is_null()) return out;
  if (!online->is_array()) return InvalidArgumentError(path + ".online_transforms must be an array");
  if (online->size() > kMaxOnlineTransforms)
    return InvalidArgumentError(path + ".online_transforms has more than " + std::to_string(kMaxOnlineTransforms) +
                                " entries");
  for (size_t i = 0; i < online->size(); ++i) {
    const json& o = (*online)[i];
    const std::string where = path + ".online_transforms[" + std::to_string(i) + "]";
    if (!o.is_object()) return InvalidArgumentError(where + " must be an object");
    MQ_RETURN_IF_ERROR(CheckFields(o, where,
                                   {{"layer", Kind::kUnsigned, true},
                                    {"site", Kind::kString, true},
                                    {"kind", Kind::kString, true},
                                    {"size", Kind::kUnsigned, true},
                                    {"seed", Kind::kUnsigned, true}}));
    const uint64_t layer = o["layer"].get<uint64_t>();
    if (layer >= static_cast<uint64_t>(num_layers))
      return InvalidArgumentError(where + ".layer " + std::to_string(layer) + " is not below num_hidden_layers " +
                                  std::to_string(num_layers));
    const uint64_t size = o["size"].get<uint64_t>();
    if (size > (uint64_t{1} << 20)) return InvalidArgumentError(where + ".size is out of range");
    OnlineTransform t;
    t.site = o["site"].get<std::string>();
    t.kind = o["kind"].get<std::string>();
    t.size = static_cast<int64_t>(size);
    t.seed = o["seed"].get<uint64_t>();
    if (!out.online_transforms.emplace(static_cast<int64_t>(layer), std::move(t)).second)
      return InvalidArgumentError(where + ": layer " + std::to_string(layer) + " has a second online transform");
  }
  return out;
}

}  // namespace mq::format
