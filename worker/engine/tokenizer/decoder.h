// The tokenizer.json "decoder" for byte-level BPE: token strings back to the bytes they stand
// for.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mq {

class ByteLevelDecoder {
 public:
  // Accepts {"type":"ByteLevel",...} or a Sequence whose only step is ByteLevel.
  static StatusOr<ByteLevelDecoder> FromJson(const nlohmann::json& spec);

  // Appends the bytes of one token. A token whose every character is in the byte-level
  // alphabet becomes the bytes those characters stand for; any other token contributes its own
  // UTF-8 unchanged, as in Hugging Face's ByteLevel decoder. Added tokens such as
  // "<|endoftext|>" are printable ASCII, which the alphabet maps to itself, so they come out
  // as written either way.
  void AppendToken(std::string_view token, std::string* out) const;

 private:
  ByteLevelDecoder() = default;
};

}  // namespace mq
