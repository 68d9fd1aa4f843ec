// The tokenizer.json "normalizer": none, or Unicode NFC (alone or as the only step of a Sequence),
// which is what GPT-NeoX-style byte-level BPE files use.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mq {

class Normalizer {
 public:
  // Accepts null, {"type":"NFC"} and {"type":"Sequence","normalizers":[NFC...]}; anything else is
  // refused with Unimplemented rather than silently producing different tokens than
  // Hugging Face `tokenizers` would.
  static StatusOr<Normalizer> FromJson(const nlohmann::json& spec);
  static Normalizer Identity() { return Normalizer(false); }
  static Normalizer Nfc() { return Normalizer(true); }

  bool is_identity() const { return !nfc_; }

  // `text` must be valid UTF-8.
  StatusOr<std::string> Normalize(std::string_view text) const;

 private:
  explicit Normalizer(bool nfc) : nfc_(nfc) {}
  bool nfc_;
};

}  // namespace mq
