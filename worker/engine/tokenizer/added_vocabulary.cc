#include "tokenizer/added_vocabulary.h"

#include <unicode/uchar.h>

#include <algorithm>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace mq {
namespace {

using json_fields::Quote;

// Hugging Face decides single_word and lstrip/rstrip with Rust regex's Unicode \w and \s.
bool IsWordChar(char32_t c) {
  const UChar32 cp = static_cast<UChar32>(c);
  if (u_hasBinaryProperty(cp, UCHAR_ALPHABETIC) || u_hasBinaryProperty(cp, UCHAR_JOIN_CONTROL)) {
    return true;
  }
  switch (u_charType(cp)) {
    case U_NON_SPACING_MARK:
    case U_ENCLOSING_MARK:
    case U_COMBINING_SPACING_MARK:
    case U_DECIMAL_DIGIT_NUMBER:
    case U_CONNECTOR_PUNCTUATION:
      return true;
    default:
      return false;
  }
}

bool IsWhiteSpace(char32_t c) {
  return u_hasBinaryProperty(static_cast<UChar32>(c), UCHAR_WHITE_SPACE);
}

// Code point that ends text[0, end); text must be valid UTF-8 and end > 0.
char32_t LastCodePoint(std::string_view text, size_t end, size_t* begin) {
  size_t b = end - 1;
  while (b > 0 && (static_cast<unsigned char>(text[b]) & 0xC0) == 0x80) --b;
  *begin = b;
  size_t pos = b;
  return utf8::DecodeNext(text, &pos);
}

// Start of the whitespace run that ends at `end` (== end when there is none).
size_t WhitespaceRunStart(std::string_view text, size_t end) {
  while (end > 0) {
    size_t begin = 0;
    if (!IsWhiteSpace(LastCodePoint(text, end, &begin))) break;
    end = begin;
  }
  return end;
}

// End of the whitespace run that starts at `begin`.
size_t WhitespaceRunEnd(std::string_view text, size_t begin) {
  while (begin < text.size()) {
    size_t next = begin;
    if (!IsWhiteSpace(utf8::DecodeNext(text, &next))) break;
    begin = next;
  }
  return begin;
}

StatusOr<AddedToken> ParseAddedToken(const nlohmann::json& entry, const std::string& where) {
  if (!entry.is_object()) return DataLossError(where + " must be an object");
  AddedToken token;
  MQ_ASSIGN_OR_RETURN(token.content, json_fields::String(entry, where, "content"));
  if (token.content.empty()) return DataLossError(where + ".content is empty");
  if (utf8::FindInvalid(token.content) != utf8::kValid) {
    return DataLossError(where + ".content is not valid UTF-8");
  }
  MQ_ASSIGN_OR_RETURN(const nlohmann::json* id, json_fields::Member(entry, where, "id"));
  if (!id->is_number_integer() ||
      (id->is_number_unsigned()
           ? id->get<uint64_t>() >= BpeModel::kMaxVocabEntries
           : id->get<int64_t>() < 0 ||
                 id->get<int64_t>() >= static_cast<int64_t>(BpeModel::kMaxVocabEntries))) {
    return DataLossError(where + " (" + Quote(token.content) + ") has id " + id->dump() +
                         ", not an integer in [0, " + std::to_string(BpeModel::kMaxVocabEntries) +
                         ")");
  }
  token.id = static_cast<int32_t>(id->get<int64_t>());
  MQ_ASSIGN_OR_RETURN(token.special, json_fields::OptionalBool(entry, where, "special", false));
  MQ_ASSIGN_OR_RETURN(token.single_word,
                      json_fields::OptionalBool(entry, where, "single_word", false));
  MQ_ASSIGN_OR_RETURN(token.lstrip, json_fields::OptionalBool(entry, where, "lstrip", false));
  MQ_ASSIGN_OR_RETURN(token.rstrip, json_fields::OptionalBool(entry, where, "rstrip", false));
  // Hugging Face's default: special tokens are matched verbatim, others after normalization.
  MQ_ASSIGN_OR_RETURN(token.normalized,
                      json_fields::OptionalBool(entry, where, "normalized", !token.special));
  return token;
}

}  // namespace

void AddedVocabulary::Trie::Insert(std::string_view pattern, int32_t token) {
  int32_t node = 0;
  for (const char ch : pattern) {
    const auto c = static_cast<unsigned char>(ch);
    auto& children = nodes[static_cast<size_t>(node)].children;
    const auto it = std::find_if(children.begin(), children.end(),
                                 [c](const auto& child) { return child.first == c; });
    if (it != children.end()) {
      node = it->second;
    } else {
      const auto next = static_cast<int32_t>(nodes.size());
      children.emplace_back(c, next);  // invalidates `children` only after its last use
      nodes.emplace_back();
      node = next;
    }
  }
  first_byte[static_cast<unsigned char>(pattern.front())] = true;
  // The first token listed keeps a pattern two tokens share, as in Hugging Face's matcher.
  if (nodes[static_cast<size_t>(node)].token < 0) nodes[static_cast<size_t>(node)].token = token;
}

std::pair<size_t, int32_t> AddedVocabulary::Trie::LongestAt(std::string_view text,
                                                            size_t pos) const {
  std::pair<size_t, int32_t> best{0, -1};
  if (!first_byte[static_cast<unsigned char>(text[pos])]) return best;
  int32_t node = 0;
  for (size_t i = pos; i < text.size(); ++i) {
    const auto c = static_cast<unsigned char>(text[i]);
    const auto& children = nodes[static_cast<size_t>(node)].children;
    const auto it = std::find_if(children.begin(), children.end(),
                                 [c](const auto& child) { return child.first == c; });
    if (it == children.end()) break;
    node = it->second;
    if (nodes[static_cast<size_t>(node)].token >= 0) {
      best = {i + 1 - pos, nodes[static_cast<size_t>(node)].token};
    }
  }
  return best;
}

StatusOr<AddedVocabulary> AddedVocabulary::FromJson(const nlohmann::json& added_tokens,
                                                    const BpeModel& model,
                                                    const Normalizer& normalizer) {
  AddedVocabulary vocab;
  if (added_tokens.is_null()) return vocab;
  if (!added_tokens.is_array()) {
    return DataLossError("added_tokens must be an array, got " +
                         std::string(added_tokens.type_name()));
  }
  std::unordered_map<std::string, int32_t> by_content;
  int32_t max_assigned = -1;
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    const std::string where = "added_tokens[" + std::to_string(i) + "]";
    MQ_ASSIGN_OR_RETURN(AddedToken token, ParseAddedToken(added_tokens[i], where));
    if (by_content.contains(token.content)) {
      return DataLossError(where + ": token " + Quote(token.content) + " is listed twice");
    }
    // The id `tokenizers` gives this token when loading the file.
    int32_t expected;
    if (const auto model_id = model.TokenToId(token.content)) {
      expected = *model_id;
    } else {
      const auto model_size = static_cast<int32_t>(model.size());
      expected = (max_assigned < 0)                                ? model_size
                 : (max_assigned >= model_size || model_size == 0) ? max_assigned + 1
                                                                   : model_size;
      if (model.IdToToken(expected) != nullptr) {
        return DataLossError(where + ": token " + Quote(token.content) + " would get id " +
                             std::to_string(expected) + ", which model.vocab gives to " +
                             Quote(*model.IdToToken(expected)));
      }
    }
    if (token.id != expected) {
      return DataLossError(where + ": token " + Quote(token.content) + " has id " +
                           std::to_string(token.id) + " but its id in this vocabulary is " +
                           std::to_string(expected));
    }
    if (vocab.by_id_.contains(token.id)) {
      return DataLossError(where + ": id " + std::to_string(token.id) +
                           " is already used by added token " +
                           Quote(vocab.tokens_[vocab.by_id_[token.id]].content));
    }
    max_assigned = std::max(max_assigned, token.id);
    by_content.emplace(token.content, token.id);
    vocab.by_id_.emplace(token.id, vocab.tokens_.size());
    vocab.tokens_.push_back(std::move(token));
  }
  vocab.max_id_ = max_assigned;

  // Special tokens take precedence over others when two share a pattern.
  for (const bool special_pass : {true, false}) {
    for (size_t i = 0; i < vocab.tokens_.size(); ++i) {
      const AddedToken& token = vocab.tokens_[i];
      if (token.special != special_pass) continue;
      if (!token.normalized) {
        vocab.raw_.Insert(token.content, static_cast<int32_t>(i));
        continue;
      }
      MQ_ASSIGN_OR_RETURN(std::string pattern, normalizer.Normalize(token.content));
      if (!pattern.empty()) vocab.normalized_.Insert(pattern, static_cast<int32_t>(i));
    }
  }
  return vocab;
}

void AddedVocabulary::Split(std::string_view text, Stage stage, std::vector<Span>* spans) const {
  const Trie& trie = stage == Stage::kRaw ? raw_ : normalized_;
  if (trie.nodes.size() == 1) {
    if (!text.empty()) spans->push_back(Span{0, text.size(), -1});
    return;
  }
  // Follows Hugging Face's find_matches: the scan resumes at the end of each literal match
  // (also after a single_word rejection), while lstrip/rstrip only widen what the token span
  // swallows.
  size_t emitted = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    const auto [length, index] = trie.LongestAt(text, pos);
    if (index < 0) {
      ++pos;
      continue;
    }
    const AddedToken& token = tokens_[static_cast<size_t>(index)];
    size_t begin = pos;
    size_t end = pos + length;
    pos = end;
    if (token.single_word) {
      size_t unused = 0;
      const bool word_before = begin > 0 && IsWordChar(LastCodePoint(text, begin, &unused));
      size_t after = end;
      const bool word_after = end < text.size() && IsWordChar(utf8::DecodeNext(text, &after));
      if (word_before || word_after) continue;
    }
    if (token.lstrip) begin = std::max(WhitespaceRunStart(text, begin), emitted);
    if (token.rstrip) end = WhitespaceRunEnd(text, end);
    if (emitted < begin) spans->push_back(Span{emitted, begin, -1});
    spans->push_back(Span{begin, end, token.id});
    emitted = end;
  }
  if (emitted < text.size()) spans->push_back(Span{emitted, text.size(), -1});
}

const AddedToken* AddedVocabulary::FindById(int32_t id) const {
  const auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : &tokens_[it->second];
}

std::optional<int32_t> AddedVocabulary::FindByContent(std::string_view content) const {
  for (const AddedToken& token : tokens_) {
    if (token.content == content) return token.id;
  }
  return std::nullopt;
}

}  // namespace mq
