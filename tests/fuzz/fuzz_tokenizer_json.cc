// tokenizer.json: loading never crashes, throws or grows past the bounds; a loaded tokenizer
// encodes and decodes a fixed text with ids inside its vocabulary.
#include <cstdint>
#include <string_view>

#include "format/limits.h"
#include "fuzz_check.h"
#include "tokenizer/bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto tok = mq::Tokenizer::LoadFromJson(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!tok.ok()) return 0;
  MQ_FUZZ_CHECK(tok->vocab_size() > 0);
  auto ids = tok->Encode("Hello, world! <|endoftext|> 12 é漢");
  if (!ids.ok()) return 0;
  // The template adds a bounded number of ids; the text itself yields at most one id per byte.
  MQ_FUZZ_CHECK(ids->size() <= 64 + mq::format::kMaxTemplateIds);
  for (int32_t id : *ids) MQ_FUZZ_CHECK(id >= 0 && id < tok->vocab_size());
  auto text = tok->Decode(*ids);
  MQ_FUZZ_CHECK(text.ok());
  return 0;
}
