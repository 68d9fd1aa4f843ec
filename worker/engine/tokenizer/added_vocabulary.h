// tokenizer.json "added_tokens" (e.g. <|endoftext|>): tokens matched literally in the text before
// pre-tokenization, so they are never split by the regex or BPE.
#pragma once

#include <cstddef>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/bpe_model.h"
#include "tokenizer/normalizer.h"
#include "util/status.h"

namespace mq {

struct AddedToken {
  std::string content;
  int32_t id = -1;
  // Matches only when not adjacent to a word character (Unicode \w) on either side.
  bool single_word = false;
  // Absorb the whitespace on that side into the token.
  bool lstrip = false;
  bool rstrip = false;
  // Matched in the normalized text (true) or in the raw input (false).
  bool normalized = true;
  // Dropped by Decode when skipping special tokens.
  bool special = false;
};

class AddedVocabulary {
 public:
  // Parses `added_tokens` (null or an array). Each id must be the one Hugging Face would assign
  // on load (the model's id when the content is in model.vocab, else the next free id past
  // it): `tokenizers` silently re-numbers tokens whose id disagrees, so a mismatch means a
  // corrupt or hand-edited file and is refused.
  static StatusOr<AddedVocabulary> FromJson(const nlohmann::json& added_tokens,
                                            const BpeModel& model, const Normalizer& normalizer);

  // A piece of the input: an added token (id >= 0) or text still to be tokenized (id == -1).
  struct Span {
    size_t begin;
    size_t end;
    int32_t id;
  };
  enum class Stage { kRaw, kNormalized };

  // Appends the spans of `text`: leftmost-longest matches of the tokens matched at `stage`, the
  // text between them, in order. Spans of plain text are never empty.
  void Split(std::string_view text, Stage stage, std::vector<Span>* spans) const;

  const std::vector<AddedToken>& tokens() const { return tokens_; }
  const AddedToken* FindById(int32_t id) const;
  std::optional<int32_t> FindByContent(std::string_view content) const;
  int32_t max_id() const { return max_id_; }

 private:
  // Byte trie over the patterns of one stage, for leftmost-longest matching.
  struct Trie {
    struct Node {
      std::vector<std::pair<unsigned char, int32_t>> children;
      int32_t token = -1;  // index into tokens_, or -1
    };
    std::vector<Node> nodes{Node{}};
    bool first_byte[256] = {};
    void Insert(std::string_view pattern, int32_t token);
    // Longest pattern starting at text[pos]: {length, token index}, or {0, -1}.
    std::pair<size_t, int32_t> LongestAt(std::string_view text, size_t pos) const;
  };

  std::vector<AddedToken> tokens_;
  std::unordered_map<int32_t, size_t> by_id_;
  Trie raw_;
  Trie normalized_;
  int32_t max_id_ = -1;
};

}  // namespace mq
