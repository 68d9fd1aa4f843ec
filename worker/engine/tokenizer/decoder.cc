#include "tokenizer/decoder.h"

#include "tokenizer/byte_level.h"
#include "tokenizer/json_fields.h"

namespace mq {

StatusOr<ByteLevelDecoder> ByteLevelDecoder::FromJson(const nlohmann::json& spec) {
  if (spec.is_null()) {
    return UnimplementedError("decoder is null; only ByteLevel is supported");
  }
  MQ_ASSIGN_OR_RETURN(std::string_view outer_type, json_fields::Type(spec, "decoder"));
  const nlohmann::json* step = &spec;
  std::string path = "decoder";
  if (outer_type == "Sequence") {
    MQ_ASSIGN_OR_RETURN(const nlohmann::json* steps,
                        json_fields::Member(spec, "decoder", "decoders"));
    if (!steps->is_array()) return DataLossError("decoder.decoders must be an array");
    if (steps->size() != 1) {
      return UnimplementedError("decoder Sequence with " + std::to_string(steps->size()) +
                                " steps is not supported (only a single ByteLevel step)");
    }
    step = &(*steps)[0];
    path = "decoder.decoders[0]";
  }
  MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(*step, path));
  if (type != "ByteLevel") {
    return UnimplementedError(path + ": decoder type " + json_fields::Quote(type) +
                              " is not supported (only ByteLevel)");
  }
  return ByteLevelDecoder();
}

void ByteLevelDecoder::AppendToken(std::string_view token, std::string* out) const {
  if (!AppendBytesFromByteLevel(token, out)) out->append(token);
}

}  // namespace mq
