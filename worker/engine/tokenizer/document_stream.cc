#include "tokenizer/document_stream.h"

#include <string>

namespace mq {

std::vector<std::string_view> SplitDocuments(std::string_view text) {
  static constexpr std::string_view kSeparator = "\n\n";
  std::vector<std::string_view> pieces;
  size_t begin = 0;
  while (true) {
    const size_t found = text.find(kSeparator, begin);
    if (found == std::string_view::npos) break;
    pieces.push_back(text.substr(begin, found - begin));
    begin = found + kSeparator.size();
  }
  pieces.push_back(text.substr(begin));
  return pieces;
}

StatusOr<std::vector<int32_t>> TokenizeDocuments(const Tokenizer& tokenizer, std::string_view text,
                                                 int32_t eos_id) {
  if (eos_id < 0 || eos_id >= tokenizer.vocab_size() || !tokenizer.IdToToken(eos_id)) {
    return InvalidArgumentError("eos id " + std::to_string(eos_id) +
                                " is not a token of this tokenizer (vocabulary size " +
                                std::to_string(tokenizer.vocab_size()) + ")");
  }
  // The pieces are walked, not collected: a dataset of blank lines would otherwise hold a view
  // per two bytes (16 bytes each) on top of the token stream.
  std::vector<int32_t> stream;
  size_t begin = 0;
  for (size_t i = 0;; ++i) {
    const size_t found = text.find("\n\n", begin);
    const std::string_view piece = text.substr(begin, found == std::string_view::npos ? std::string_view::npos : found - begin);
    auto ids = tokenizer.Encode(piece);
    if (!ids.ok()) return ids.status().WithContext("document " + std::to_string(i));
    stream.insert(stream.end(), ids->begin(), ids->end());
    stream.push_back(eos_id);
    if (found == std::string_view::npos) break;
    begin = found + 2;
  }
  return stream;
}

}  // namespace mq
