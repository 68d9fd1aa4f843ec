// The "model" section of a byte-level BPE tokenizer.json: vocabulary, ranked merges, and the
// merge loop that turns one pre-tokenized word into token ids.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "format/limits.h"
#include "util/status.h"

namespace mq {

class BpeModel {
 public:
  // Bounds on untrusted files: far above any real vocabulary (GPT-NeoX: 50k; the largest
  // public ones: a few hundred k), far below what would exhaust memory.
  static constexpr size_t kMaxVocabEntries = format::kMaxVocabEntries;
  static constexpr size_t kMaxMerges = format::kMaxMerges;

  // `model` is the tokenizer.json "model" object. Refuses what Hugging Face refuses (merges
  // naming tokens or producing tokens absent from the vocabulary) and what it would accept but
  // mis-handle (duplicate or negative ids), plus stochastic options (dropout).
  static StatusOr<BpeModel> FromJson(const nlohmann::json& model);

  BpeModel(BpeModel&&) noexcept;
  BpeModel& operator=(BpeModel&&) noexcept;
  ~BpeModel();

  // Appends the ids for one word, already in the byte-level alphabet. Characters with no
  // vocabulary entry become unk_token when the file names one and are dropped otherwise, as in
  // Hugging Face `tokenizers`.
  void Tokenize(std::string_view word, std::vector<int32_t>* ids) const;

  std::optional<int32_t> TokenToId(std::string_view token) const;
  // nullptr when no token has this id.
  const std::string* IdToToken(int32_t id) const;
  // Largest id in the vocabulary, or -1 when it is empty.
  int32_t max_id() const { return static_cast<int32_t>(id_to_token_.size()) - 1; }
  size_t size() const { return vocab_.size(); }
  size_t num_merges() const { return merges_.size(); }

 private:
  struct StringHash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Merge {
    int32_t rank;
    int32_t new_id;
  };
  struct WordCache;

  BpeModel();
  static uint64_t PairKey(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
  void MergeWord(std::string_view word, std::vector<int32_t>* ids) const;

  std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>> vocab_;
  // Points at vocab_'s keys: unordered_map nodes keep their address across rehash and move.
  std::vector<const std::string*> id_to_token_;
  std::unordered_map<uint64_t, Merge> merges_;
  std::optional<int32_t> unk_id_;
  bool fuse_unk_ = false;
  bool byte_fallback_ = false;
  bool ignore_merges_ = false;
  std::string continuing_subword_prefix_;
  std::string end_of_word_suffix_;
  std::unique_ptr<WordCache> cache_;
};

}  // namespace mq
