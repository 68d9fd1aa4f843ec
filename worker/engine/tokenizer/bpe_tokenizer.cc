#include "tokenizer/bpe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <new>
#include <nlohmann/json.hpp>
#include <system_error>

#include "format/tokenizer_json.h"
#include "tokenizer/added_vocabulary.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/byte_level.h"
#include "tokenizer/decoder.h"
#include "tokenizer/json_fields.h"
#include "tokenizer/normalizer.h"
#include "tokenizer/post_processor.h"
#include "tokenizer/pretokenizer.h"
#include "tokenizer/utf8.h"

namespace mq {
namespace {

// A field that is absent reads as null, which every section treats as "not configured".
const nlohmann::json& FieldOrNull(const nlohmann::json& root, const char* key) {
  static const nlohmann::json kNull;
  const auto it = root.find(key);
  return it == root.end() ? kNull : *it;
}

}  // namespace

struct Tokenizer::Impl {
  Impl(BpeModel model_in, Normalizer normalizer_in, ByteLevelPreTokenizer pre_tokenizer_in,
       AddedVocabulary added_in, PostProcessor post_processor_in, ByteLevelDecoder decoder_in)
      : model(std::move(model_in)),
        normalizer(normalizer_in),
        pre_tokenizer(std::move(pre_tokenizer_in)),
        added(std::move(added_in)),
        post_processor(std::move(post_processor_in)),
        decoder(decoder_in),
        vocab_size(std::max(model.max_id(), added.max_id()) + 1) {}

  BpeModel model;
  Normalizer normalizer;
  ByteLevelPreTokenizer pre_tokenizer;
  AddedVocabulary added;
  PostProcessor post_processor;
  ByteLevelDecoder decoder;
  int32_t vocab_size;
};

StatusOr<std::unique_ptr<Tokenizer::Impl>> Tokenizer::BuildImpl(const nlohmann::json& root) {
  MQ_ASSIGN_OR_RETURN(const nlohmann::json* model_json, json_fields::Member(root, "", "model"));
  MQ_ASSIGN_OR_RETURN(BpeModel model, BpeModel::FromJson(*model_json));
  MQ_ASSIGN_OR_RETURN(Normalizer normalizer, Normalizer::FromJson(FieldOrNull(root, "normalizer")));
  MQ_ASSIGN_OR_RETURN(ByteLevelPreTokenizer pre_tokenizer,
                      ByteLevelPreTokenizer::FromJson(FieldOrNull(root, "pre_tokenizer")));
  MQ_ASSIGN_OR_RETURN(
      AddedVocabulary added,
      AddedVocabulary::FromJson(FieldOrNull(root, "added_tokens"), model, normalizer));
  MQ_ASSIGN_OR_RETURN(PostProcessor post_processor,
                      PostProcessor::FromJson(FieldOrNull(root, "post_processor")));
  MQ_ASSIGN_OR_RETURN(ByteLevelDecoder decoder,
                      ByteLevelDecoder::FromJson(FieldOrNull(root, "decoder")));
  auto impl = std::make_unique<Impl>(std::move(model), normalizer, std::move(pre_tokenizer),
                                     std::move(added), std::move(post_processor), decoder);
  if (impl->vocab_size <= 0) return DataLossError("the vocabulary is empty");
  for (const int32_t id : impl->post_processor.TemplateIds()) {
    if (impl->added.FindById(id) == nullptr && impl->model.IdToToken(id) == nullptr) {
      return DataLossError("post_processor adds id " + std::to_string(id) + ", which no token has");
    }
  }
  return impl;
}

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

StatusOr<Tokenizer> Tokenizer::LoadFromFile(const std::string& tokenizer_json_path) {
  const std::string context = "tokenizer.json '" + tokenizer_json_path + "'";
  std::error_code ec;
  const auto size = std::filesystem::file_size(tokenizer_json_path, ec);
  if (ec) return NotFoundError(context + ": cannot read: " + ec.message());
  if (size > kMaxFileBytes) {
    return ResourceExhaustedError(context + ": file is " + std::to_string(size) +
                                  " bytes, more than the limit of " +
                                  std::to_string(kMaxFileBytes));
  }
  std::ifstream in(tokenizer_json_path, std::ios::binary);
  if (!in) return NotFoundError(context + ": cannot open");
  std::string text;
  try {
    text.resize(static_cast<size_t>(size));
    in.read(text.data(), static_cast<std::streamsize>(size));
    // The file may have changed size since file_size(); what was read is what counts.
    text.resize(static_cast<size_t>(in.gcount()));
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(context + ": out of memory reading the file");
  }
  if (in.bad()) return NotFoundError(context + ": read error");
  return LoadFromJson(text, context);
}

StatusOr<Tokenizer> Tokenizer::LoadFromJson(std::string_view json_text,
                                            std::string_view source_name) {
  const std::string context(source_name);
  if (json_text.size() > kMaxFileBytes) {
    return ResourceExhaustedError(context + ": " + std::to_string(json_text.size()) +
                                  " bytes, more than the limit of " +
                                  std::to_string(kMaxFileBytes));
  }
  try {
    // The model-format library's reader: size and nesting bounded before parsing, then the
    // structure's counts and lengths (vocabulary, merges, added tokens, template) bounded.
    MQ_ASSIGN_OR_RETURN(nlohmann::json root, format::ParseTokenizerJson(json_text, context));
    // Both would change the ids Encode returns; `tokenizers` applies them inside encode().
    for (const char* key : {"truncation", "padding"}) {
      if (!FieldOrNull(root, key).is_null()) {
        return UnimplementedError(context + ": \"" + key +
                                  "\" is set; only null is supported (pad or truncate the ids "
                                  "instead)");
      }
    }

    auto impl = BuildImpl(root);
    if (!impl.ok()) return impl.status().WithContext(context);
    return Tokenizer(std::move(impl).value());
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError(context + ": out of memory while loading");
  } catch (const std::exception& e) {
    // nlohmann's type errors should be impossible after the checks above; refuse, never crash.
    return DataLossError(context + ": malformed: " + e.what());
  }
}

Status Tokenizer::EncodeText(std::string_view text, std::vector<int32_t>* ids) const {
  const Impl& t = *impl_;
  std::vector<AddedVocabulary::Span> raw_spans;
  std::vector<AddedVocabulary::Span> normalized_spans;
  std::string mapped;
  const auto tokenize_word = [&](std::string_view word) -> Status {
    mapped.clear();
    AppendByteLevel(word, &mapped);
    t.model.Tokenize(mapped, ids);
    return OkStatus();
  };
  t.added.Split(text, AddedVocabulary::Stage::kRaw, &raw_spans);
  for (const auto& raw : raw_spans) {
    if (raw.id >= 0) {
      ids->push_back(raw.id);
      continue;
    }
    // Each stretch between verbatim added tokens is normalized on its own, as in
    // `tokenizers`: a combining mark right after "<|endoftext|>" does not compose across it.
    MQ_ASSIGN_OR_RETURN(std::string normalized,
                        t.normalizer.Normalize(text.substr(raw.begin, raw.end - raw.begin)));
    normalized_spans.clear();
    t.added.Split(normalized, AddedVocabulary::Stage::kNormalized, &normalized_spans);
    for (const auto& span : normalized_spans) {
      if (span.id >= 0) {
        ids->push_back(span.id);
        continue;
      }
      MQ_RETURN_IF_ERROR(t.pre_tokenizer.Split(
          std::string_view(normalized).substr(span.begin, span.end - span.begin), tokenize_word));
    }
  }
  return OkStatus();
}

StatusOr<std::vector<int32_t>> Tokenizer::Encode(std::string_view utf8_text,
                                                 bool add_special_tokens) const {
  if (utf8_text.size() > kMaxEncodeBytes) {
    return InvalidArgumentError("text to encode is " + std::to_string(utf8_text.size()) +
                                " bytes, more than the limit of " +
                                std::to_string(kMaxEncodeBytes));
  }
  if (const size_t bad = utf8::FindInvalid(utf8_text); bad != utf8::kValid) {
    return InvalidArgumentError("text to encode is not valid UTF-8 (ill-formed sequence at byte " +
                                std::to_string(bad) + ")");
  }
  try {
    std::vector<int32_t> ids;
    ids.reserve(utf8_text.size() / 3 + 4);
    MQ_RETURN_IF_ERROR(EncodeText(utf8_text, &ids));
    if (add_special_tokens) ids = impl_->post_processor.Apply(std::move(ids));
    return ids;
  } catch (const std::bad_alloc&) {
    return ResourceExhaustedError("out of memory encoding " + std::to_string(utf8_text.size()) +
                                  " bytes");
  }
}

Status Tokenizer::DecodeInto(const std::vector<int32_t>& ids, bool skip_special_tokens,
                             std::string* out) const {
  const Impl& t = *impl_;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= t.vocab_size) {
      return OutOfRangeError("id " + std::to_string(id) + " at position " + std::to_string(i) +
                             " is outside the vocabulary [0, " + std::to_string(t.vocab_size) +
                             ")");
    }
    // Added tokens shadow model tokens with the same id, as in `tokenizers`.
    if (const AddedToken* added = t.added.FindById(id)) {
      if (skip_special_tokens && added->special) continue;
      t.decoder.AppendToken(added->content, out);
      continue;
    }
    const std::string* token = t.model.IdToToken(id);
    if (token == nullptr) {
      return InvalidArgumentError("id " + std::to_string(id) + " at position " + std::to_string(i) +
                                  " belongs to no token");
    }
    t.decoder.AppendToken(*token, out);
  }
  return OkStatus();
}

StatusOr<std::string> Tokenizer::DecodeBytes(const std::vector<int32_t>& ids,
                                             bool skip_special_tokens) const {
  std::string out;
  MQ_RETURN_IF_ERROR(DecodeInto(ids, skip_special_tokens, &out));
  return out;
}

StatusOr<std::string> Tokenizer::Decode(const std::vector<int32_t>& ids,
                                        bool skip_special_tokens) const {
  std::string bytes;
  MQ_RETURN_IF_ERROR(DecodeInto(ids, skip_special_tokens, &bytes));
  if (utf8::FindInvalid(bytes) == utf8::kValid) return bytes;
  return utf8::RepairLossy(bytes);
}

int32_t Tokenizer::vocab_size() const { return impl_->vocab_size; }

std::optional<int32_t> Tokenizer::TokenToId(std::string_view token) const {
  if (const auto id = impl_->added.FindByContent(token)) return id;
  return impl_->model.TokenToId(token);
}

std::optional<std::string> Tokenizer::IdToToken(int32_t id) const {
  if (const AddedToken* added = impl_->added.FindById(id)) return added->content;
  if (const std::string* token = impl_->model.IdToToken(id)) return *token;
  return std::nullopt;
}

bool Tokenizer::IsSpecialToken(int32_t id) const {
  const AddedToken* added = impl_->added.FindById(id);
  return added != nullptr && added->special;
}

}  // namespace mq
