// A Hugging Face tokenizer.json byte-level BPE tokenizer (GPT-2 / GPT-NeoX / Mamba style) that
// produces the same ids as the `tokenizers` library for the features it accepts, and refuses
// with a clear error the files it cannot reproduce exactly.
//
// Encode pipeline, as in `tokenizers`: split out added tokens matched verbatim (e.g.
// "<|endoftext|>"), NFC-normalize the text between them, split out added tokens matched after
// normalization, split words with the GPT-2 regex, map each word's bytes to the byte-level
// alphabet, apply BPE merges by rank, then the post-processor's template.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "format/limits.h"
#include "util/status.h"

namespace mq {

class Tokenizer {
 public:
  // Bounds on untrusted input.
  static constexpr size_t kMaxFileBytes = format::kMaxTokenizerJsonBytes;
  static constexpr size_t kMaxJsonDepth = format::kMaxJsonDepth;
  static constexpr size_t kMaxEncodeBytes = size_t{1} << 30;

  // NotFound when the file cannot be read; DataLoss (corrupt: not JSON, missing or ill-typed
  // fields, inconsistent vocabulary/merges/added tokens), ResourceExhausted (over a size bound)
  // or Unimplemented (a valid feature this class does not reproduce) otherwise. Messages name
  // the file and the offending field.
  static StatusOr<Tokenizer> LoadFromFile(const std::string& tokenizer_json_path);
  // As LoadFromFile, for text already in memory; `source_name` prefixes error messages.
  static StatusOr<Tokenizer> LoadFromJson(std::string_view json_text,
                                          std::string_view source_name = "tokenizer.json");

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // InvalidArgument for ill-formed UTF-8 (naming the byte offset) or input over
  // kMaxEncodeBytes. `add_special_tokens` applies the post-processor's template, like
  // `tokenizers`' encode(..., add_special_tokens=True) and transformers' default; for
  // ByteLevel post-processors (GPT-NeoX, Mamba) it adds nothing. Thread-safe.
  StatusOr<std::vector<int32_t>> Encode(std::string_view utf8_text,
                                        bool add_special_tokens = true) const;

  // Text of `ids`, with byte sequences that are not valid UTF-8 (a character split across a
  // cut) replaced by U+FFFD, as `tokenizers`' decode does. OutOfRange for ids outside
  // [0, vocab_size()), InvalidArgument for an id in range that no token has (`tokenizers`
  // would silently skip both).
  StatusOr<std::string> Decode(const std::vector<int32_t>& ids,
                               bool skip_special_tokens = false) const;
  // The raw bytes of `ids`, possibly ending inside a UTF-8 sequence: for streaming output,
  // where the rest of a character arrives with the next token.
  StatusOr<std::string> DecodeBytes(const std::vector<int32_t>& ids,
                                    bool skip_special_tokens = false) const;

  // One past the largest id of the vocabulary or the added tokens: the embedding row count a
  // model needs.
  int32_t vocab_size() const;
  // Added tokens first, then the model's vocabulary, as in `tokenizers`.
  std::optional<int32_t> TokenToId(std::string_view token) const;
  std::optional<std::string> IdToToken(int32_t id) const;
  bool IsSpecialToken(int32_t id) const;

 private:
  struct Impl;
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  static StatusOr<std::unique_ptr<Impl>> BuildImpl(const nlohmann::json& root);
  Status EncodeText(std::string_view text, std::vector<int32_t>* ids) const;
  Status DecodeInto(const std::vector<int32_t>& ids, bool skip_special_tokens,
                    std::string* out) const;

  std::unique_ptr<Impl> impl_;
};

}  // namespace mq
