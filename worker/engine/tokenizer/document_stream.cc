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
  std::vector<int32_t> stream;
  const std::vector<std::string_view> pieces = SplitDocuments(text);
  for (size_t i = 0; i < pieces.size(); ++i) {
    auto ids = tokenizer.Encode(pieces[i]);
    if (!ids.ok()) return ids.status().WithContext("document " + std::to_string(i));
    stream.insert(stream.end(), ids->begin(), ids->end());
    stream.push_back(eos_id);
  }
  return stream;
}

}  // namespace mq
