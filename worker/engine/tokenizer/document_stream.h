// The evaluation token stream shared with the reference perplexities (fixtures README):
// documents separated by blank lines, each followed by eos.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

#include "tokenizer/bpe_tokenizer.h"
#include "util/status.h"

namespace mq {

// Splits `text` on every "\n\n" exactly as Python's str.split("\n\n") (nothing stripped; empty
// pieces kept, so "a\n\n\n\nb" gives "a", "", "b"), encodes each piece with the tokenizer's
// default special-token handling (transformers' `tokenizer(piece)`), appends `eos_id` after each,
// and concatenates. InvalidArgument when eos_id is not a valid id or the text is not UTF-8.
StatusOr<std::vector<int32_t>> TokenizeDocuments(const Tokenizer& tokenizer, std::string_view text,
                                                 int32_t eos_id);

// The pieces of `text` split as Python's str.split("\n\n") does.
std::vector<std::string_view> SplitDocuments(std::string_view text);

}  // namespace mq
