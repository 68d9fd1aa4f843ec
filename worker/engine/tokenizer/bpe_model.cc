#include "tokenizer/bpe_model.h"

#include <array>
#include <cstdio>
#include <mutex>
#include <queue>
#include <shared_mutex>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace mq {
namespace {

using json_fields::Quote;

// Hugging Face's BPE cache holds 10,000 words; past that, words are merged every time. Long
// words are rare and would make the cache's memory unbounded.
constexpr size_t kCacheCapacity = 10'000;
constexpr size_t kMaxCachedWordBytes = 256;

StatusOr<std::pair<std::string, std::string>> ParseMerge(const nlohmann::json& entry,
                                                         size_t index) {
  const std::string where = "model.merges[" + std::to_string(index) + "]";
  if (entry.is_array()) {
    if (entry.size() != 2 || !entry[0].is_string() || !entry[1].is_string()) {
      return DataLossError(where + " must be a pair of strings");
    }
    return std::make_pair(entry[0].get<std::string>(), entry[1].get<std::string>());
  }
  if (entry.is_string()) {
    // Older files write "left right"; tokens never contain a plain space in the byte-level
    // alphabet, so exactly one space must separate the two halves.
    const std::string& line = entry.get_ref<const std::string&>();
    const size_t space = line.find(' ');
    if (space == std::string::npos || line.find(' ', space + 1) != std::string::npos) {
      return DataLossError(where + " " + Quote(line) +
                           " must be two tokens separated by a single space");
    }
    return std::make_pair(line.substr(0, space), line.substr(space + 1));
  }
  return DataLossError(where + " must be a [left, right] pair or a \"left right\" string, got " +
                       std::string(entry.type_name()));
}

}  // namespace

struct BpeModel::WordCache {
  mutable std::shared_mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
};

BpeModel::BpeModel() : cache_(std::make_unique<WordCache>()) {}
BpeModel::BpeModel(BpeModel&&) noexcept = default;
BpeModel& BpeModel::operator=(BpeModel&&) noexcept = default;
BpeModel::~BpeModel() = default;

StatusOr<BpeModel> BpeModel::FromJson(const nlohmann::json& model) {
  BpeModel bpe;
  if (!model.is_object()) return DataLossError("model must be a JSON object");
  // Files written by old `tokenizers` versions omit the type; vocab + merges identify BPE.
  if (model.contains("type") || !model.contains("merges")) {
    MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(model, "model"));
    if (type != "BPE") {
      return UnimplementedError("model type " + Quote(type) + " is not supported (only BPE)");
    }
  }

  // Dropout samples merges at random: the same text would get different ids on each call.
  if (const auto it = model.find("dropout"); it != model.end() && !it->is_null()) {
    if (!it->is_number()) return DataLossError("model.dropout must be a number or null");
    if (it->get<double>() != 0.0) {
      return UnimplementedError("model.dropout = " + it->dump() +
                                " is not supported (tokenization would not be deterministic)");
    }
  }
  MQ_ASSIGN_OR_RETURN(std::optional<std::string> unk_token,
                      json_fields::OptionalString(model, "model", "unk_token"));
  MQ_ASSIGN_OR_RETURN(std::optional<std::string> prefix,
                      json_fields::OptionalString(model, "model", "continuing_subword_prefix"));
  MQ_ASSIGN_OR_RETURN(std::optional<std::string> suffix,
                      json_fields::OptionalString(model, "model", "end_of_word_suffix"));
  MQ_ASSIGN_OR_RETURN(bpe.fuse_unk_, json_fields::OptionalBool(model, "model", "fuse_unk", false));
  MQ_ASSIGN_OR_RETURN(bpe.byte_fallback_,
                      json_fields::OptionalBool(model, "model", "byte_fallback", false));
  MQ_ASSIGN_OR_RETURN(bpe.ignore_merges_,
                      json_fields::OptionalBool(model, "model", "ignore_merges", false));
  bpe.continuing_subword_prefix_ = prefix.value_or("");
  bpe.end_of_word_suffix_ = suffix.value_or("");

  MQ_ASSIGN_OR_RETURN(const nlohmann::json* vocab, json_fields::Member(model, "model", "vocab"));
  if (!vocab->is_object()) {
    return DataLossError("model.vocab must be an object of token -> id, got " +
                         std::string(vocab->type_name()));
  }
  if (vocab->size() > kMaxVocabEntries) {
    return ResourceExhaustedError("model.vocab has " + std::to_string(vocab->size()) +
                                  " entries, more than the limit of " +
                                  std::to_string(kMaxVocabEntries));
  }
  bpe.vocab_.reserve(vocab->size());
  int64_t max_id = -1;
  for (const auto& [token, id_json] : vocab->items()) {
    if (!id_json.is_number_integer()) {
      return DataLossError(
          "model.vocab[" + Quote(token) + "] must be an integer id, got " +
          (id_json.is_number() ? id_json.dump() : std::string(id_json.type_name())));
    }
    const bool in_range = id_json.is_number_unsigned()
                              ? id_json.get<uint64_t>() < kMaxVocabEntries
                              : id_json.get<int64_t>() >= 0 &&
                                    id_json.get<int64_t>() < static_cast<int64_t>(kMaxVocabEntries);
    if (!in_range) {
      return DataLossError("model.vocab[" + Quote(token) + "] has id " + id_json.dump() +
                           ", outside [0, " + std::to_string(kMaxVocabEntries) + ")");
    }
    const int64_t id = id_json.get<int64_t>();
    bpe.vocab_.emplace(token, static_cast<int32_t>(id));
    if (id > max_id) max_id = id;
  }
  bpe.id_to_token_.assign(static_cast<size_t>(max_id + 1), nullptr);
  for (const auto& [token, id] : bpe.vocab_) {
    const std::string*& slot = bpe.id_to_token_[static_cast<size_t>(id)];
    if (slot != nullptr) {
      // Report the pair in a stable order whatever the hash order.
      const std::string& a = *slot < token ? *slot : token;
      const std::string& b = *slot < token ? token : *slot;
      return DataLossError("model.vocab: id " + std::to_string(id) + " is used by both " +
                           Quote(a) + " and " + Quote(b));
    }
    slot = &token;
  }

  if (unk_token) {
    const auto it = bpe.vocab_.find(*unk_token);
    if (it == bpe.vocab_.end()) {
      return DataLossError("model.unk_token " + Quote(*unk_token) + " is not in model.vocab");
    }
    bpe.unk_id_ = it->second;
  }

  MQ_ASSIGN_OR_RETURN(const nlohmann::json* merges, json_fields::Member(model, "model", "merges"));
  if (!merges->is_array()) {
    return DataLossError("model.merges must be an array, got " + std::string(merges->type_name()));
  }
  if (merges->size() > kMaxMerges) {
    return ResourceExhaustedError("model.merges has " + std::to_string(merges->size()) +
                                  " entries, more than the limit of " + std::to_string(kMaxMerges));
  }
  bpe.merges_.reserve(merges->size());
  int32_t rank = 0;
  for (size_t i = 0; i < merges->size(); ++i) {
    const nlohmann::json& entry = (*merges)[i];
    // merges.txt headers survive in some converted files; Hugging Face skips them.
    if (entry.is_string() && entry.get_ref<const std::string&>().starts_with("#version")) continue;
    MQ_ASSIGN_OR_RETURN(auto pair, ParseMerge(entry, i));
    const auto& [left, right] = pair;
    const std::string where = "model.merges[" + std::to_string(i) + "]";
    const auto left_it = bpe.vocab_.find(left);
    if (left_it == bpe.vocab_.end()) {
      return DataLossError(where + ": token " + Quote(left) + " is not in model.vocab");
    }
    const auto right_it = bpe.vocab_.find(right);
    if (right_it == bpe.vocab_.end()) {
      return DataLossError(where + ": token " + Quote(right) + " is not in model.vocab");
    }
    // The right half of a merge carries the continuation prefix, which the merged token drops.
    const size_t strip = bpe.continuing_subword_prefix_.size();
    if (right.size() < strip) {
      return DataLossError(where + ": token " + Quote(right) +
                           " is shorter than continuing_subword_prefix");
    }
    const std::string merged = left + right.substr(strip);
    const auto merged_it = bpe.vocab_.find(merged);
    if (merged_it == bpe.vocab_.end()) {
      return DataLossError(where + ": merged token " + Quote(merged) + " is not in model.vocab");
    }
    // A repeated pair keeps its last rank, as Hugging Face's map insertion does.
    bpe.merges_[PairKey(left_it->second, right_it->second)] = Merge{rank, merged_it->second};
    ++rank;
  }
  return bpe;
}

std::optional<int32_t> BpeModel::TokenToId(std::string_view token) const {
  const auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::IdToToken(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size()) return nullptr;
  return id_to_token_[static_cast<size_t>(id)];
}

void BpeModel::Tokenize(std::string_view word, std::vector<int32_t>* ids) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (const auto id = TokenToId(word)) {
      ids->push_back(*id);
      return;
    }
  }
  const bool cacheable = word.size() <= kMaxCachedWordBytes;
  if (cacheable) {
    std::shared_lock lock(cache_->mutex);
    const auto it = cache_->words.find(word);
    if (it != cache_->words.end()) {
      ids->insert(ids->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t start = ids->size();
  MergeWord(word, ids);
  if (cacheable) {
    std::unique_lock lock(cache_->mutex);
    if (cache_->words.size() < kCacheCapacity) {
      cache_->words.emplace(std::string(word),
                            std::vector<int32_t>(ids->begin() + start, ids->end()));
    }
  }
}

void BpeModel::MergeWord(std::string_view word, std::vector<int32_t>* ids) const {
  // A doubly linked list of symbols over the word's characters, merged in place. Mirrors
  // Hugging Face's Word::merge_all step for step (including how stale queue entries are
  // recognized), so ties and unusual merge tables resolve identically.
  struct Symbol {
    int32_t id;
    int64_t prev;
    int64_t next;
    bool removed;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  const auto add = [&symbols](int32_t id) {
    const int64_t index = static_cast<int64_t>(symbols.size());
    if (!symbols.empty()) symbols.back().next = index;
    symbols.push_back(Symbol{id, index - 1, -1, false});
  };

  int32_t pending_unk = -1;  // an unknown character not yet added, when unk_token is set
  std::string piece;
  size_t pos = 0;
  while (pos < word.size()) {
    const size_t begin = pos;
    (void)utf8::DecodeNext(word, &pos);
    piece.clear();
    if (begin > 0) piece += continuing_subword_prefix_;
    piece.append(word.substr(begin, pos - begin));
    if (pos == word.size()) piece += end_of_word_suffix_;

    if (const auto it = vocab_.find(piece); it != vocab_.end()) {
      if (pending_unk >= 0) {
        add(pending_unk);
        pending_unk = -1;
      }
      add(it->second);
      continue;
    }
    if (byte_fallback_) {
      std::vector<int32_t> byte_ids;
      for (const char c : piece) {
        char name[8];
        std::snprintf(name, sizeof(name), "<0x%02X>", static_cast<unsigned char>(c));
        const auto it = vocab_.find(std::string_view(name));
        if (it == vocab_.end()) break;
        byte_ids.push_back(it->second);
      }
      if (byte_ids.size() == piece.size()) {
        for (const int32_t id : byte_ids) add(id);
        continue;
      }
    }
    if (unk_id_) {
      if (pending_unk >= 0 && !fuse_unk_) add(pending_unk);
      pending_unk = *unk_id_;
    }
  }
  if (pending_unk >= 0) add(pending_unk);

  struct Candidate {
    int32_t rank;
    int64_t pos;
    int32_t new_id;
    // priority_queue pops the largest: invert so the lowest rank, then leftmost, comes first.
    bool operator<(const Candidate& other) const {
      if (rank != other.rank) return rank > other.rank;
      return pos > other.pos;
    }
  };
  std::priority_queue<Candidate> queue;
  const auto find_merge = [this](int32_t left, int32_t right) -> const Merge* {
    const auto it = merges_.find(PairKey(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  };
  for (size_t i = 0; i + 1 < symbols.size(); ++i) {
    if (const Merge* m = find_merge(symbols[i].id, symbols[i + 1].id)) {
      queue.push(Candidate{m->rank, static_cast<int64_t>(i), m->new_id});
    }
  }
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& current = symbols[static_cast<size_t>(top.pos)];
    if (current.removed || current.next < 0) continue;
    const Symbol right = symbols[static_cast<size_t>(current.next)];
    // An entry is stale when either side changed since it was queued.
    const Merge* still = find_merge(current.id, right.id);
    if (still == nullptr || still->new_id != top.new_id) continue;

    symbols[static_cast<size_t>(current.next)].removed = true;
    current.id = top.new_id;
    current.next = right.next;
    if (right.next >= 0) symbols[static_cast<size_t>(right.next)].prev = top.pos;

    if (current.prev >= 0) {
      if (const Merge* m = find_merge(symbols[static_cast<size_t>(current.prev)].id, current.id)) {
        queue.push(Candidate{m->rank, current.prev, m->new_id});
      }
    }
    if (current.next >= 0) {
      if (const Merge* m = find_merge(current.id, symbols[static_cast<size_t>(current.next)].id)) {
        queue.push(Candidate{m->rank, top.pos, m->new_id});
      }
    }
  }
  for (const Symbol& s : symbols) {
    if (!s.removed) ids->push_back(s.id);
  }
}

}  // namespace mq
