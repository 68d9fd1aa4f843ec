// The tokenizer.json "post_processor": what Encode adds around the text's tokens when special
// tokens are requested. ByteLevel (GPT-NeoX, Mamba) adds nothing; TemplateProcessing's single-
// sequence template can add e.g. a leading <|begin_of_text|>.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <vector>

#include "util/status.h"

namespace mq {

class PostProcessor {
 public:
  // Accepts null, ByteLevel, TemplateProcessing, or a Sequence of those with at most one
  // template. Other processors (Bert, Roberta) are refused as unimplemented.
  static StatusOr<PostProcessor> FromJson(const nlohmann::json& spec);

  // True when Apply changes nothing (the template is just the sequence).
  bool adds_nothing() const;

  // The template applied to `ids`; returns `ids` unchanged when it adds nothing.
  std::vector<int32_t> Apply(std::vector<int32_t> ids) const;

  // Every id the template can add, for checking them against the vocabulary.
  std::vector<int32_t> TemplateIds() const;

 private:
  PostProcessor() = default;
  // One template entry: the sequence itself (ids empty, is_sequence) or special-token ids.
  struct Piece {
    bool is_sequence = false;
    std::vector<int32_t> ids;
  };
  std::vector<Piece> single_{Piece{true, {}}};
};

}  // namespace mq
