#include "tokenizer/pretokenizer.h"

#include <string>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer/json_fields.h"
#include "tokenizer/utf8.h"

namespace mq {
namespace {

// GPT-2's split pattern,
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// with \s spelled out as Unicode White_Space. Hugging Face runs it on Oniguruma, whose \s is
// exactly White_Space; PCRE2's \s under UCP also matches U+180E, which would split
// differently around that character.
#define MQ_WS                                                          \
  "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}" \
  "\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
constexpr char kGpt2Pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" MQ_WS
                                "\\p{L}\\p{N}]+|[" MQ_WS "]+(?![^" MQ_WS "])|[" MQ_WS "]+";
#undef MQ_WS

std::string Pcre2Message(int code) {
  PCRE2_UCHAR buffer[256];
  if (pcre2_get_error_message(code, buffer, sizeof(buffer)) < 0) {
    return "PCRE2 error " + std::to_string(code);
  }
  return std::string(reinterpret_cast<const char*>(buffer));
}

}  // namespace

struct ByteLevelPreTokenizer::Regex {
  pcre2_code* code = nullptr;
  Regex() = default;
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code); }
};

StatusOr<ByteLevelPreTokenizer> ByteLevelPreTokenizer::FromJson(const nlohmann::json& spec) {
  if (spec.is_null()) {
    return UnimplementedError("pre_tokenizer is null; only ByteLevel is supported");
  }
  MQ_ASSIGN_OR_RETURN(std::string_view outer_type, json_fields::Type(spec, "pre_tokenizer"));
  const nlohmann::json* step = &spec;
  std::string path = "pre_tokenizer";
  if (outer_type == "Sequence") {
    MQ_ASSIGN_OR_RETURN(const nlohmann::json* steps,
                        json_fields::Member(spec, "pre_tokenizer", "pretokenizers"));
    if (!steps->is_array()) return DataLossError("pre_tokenizer.pretokenizers must be an array");
    if (steps->size() != 1) {
      return UnimplementedError("pre_tokenizer Sequence with " + std::to_string(steps->size()) +
                                " steps is not supported (only a single ByteLevel step)");
    }
    step = &(*steps)[0];
    path = "pre_tokenizer.pretokenizers[0]";
  }
  MQ_ASSIGN_OR_RETURN(std::string_view type, json_fields::Type(*step, path));
  if (type != "ByteLevel") {
    return UnimplementedError(path + ": pre-tokenizer type " + json_fields::Quote(type) +
                              " is not supported (only ByteLevel)");
  }
  // Defaults are Hugging Face's for a ByteLevel entry missing these fields.
  MQ_ASSIGN_OR_RETURN(bool add_prefix_space,
                      json_fields::OptionalBool(*step, path, "add_prefix_space", true));
  MQ_ASSIGN_OR_RETURN(bool use_regex, json_fields::OptionalBool(*step, path, "use_regex", true));
  // trim_offsets only affects character offsets, which this tokenizer does not report.
  MQ_ASSIGN_OR_RETURN(bool trim_offsets,
                      json_fields::OptionalBool(*step, path, "trim_offsets", true));
  (void)trim_offsets;
  return Create(add_prefix_space, use_regex);
}

StatusOr<ByteLevelPreTokenizer> ByteLevelPreTokenizer::Create(bool add_prefix_space,
                                                              bool use_regex) {
  if (!use_regex) return ByteLevelPreTokenizer(add_prefix_space, nullptr);
  auto regex = std::make_shared<Regex>();
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  regex->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(kGpt2Pattern), PCRE2_ZERO_TERMINATED,
                              PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (regex->code == nullptr) {
    return InternalError("compiling the GPT-2 split pattern failed at offset " +
                         std::to_string(error_offset) + ": " + Pcre2Message(error_code));
  }
  // JIT is an optimization only: without it (unsupported CPU, or PCRE2 built without JIT),
  // pcre2_match uses the interpreter with identical results.
  (void)pcre2_jit_compile(regex->code, PCRE2_JIT_COMPLETE);
  return ByteLevelPreTokenizer(add_prefix_space, std::move(regex));
}

Status ByteLevelPreTokenizer::Split(std::string_view text,
                                    const std::function<Status(std::string_view)>& emit) const {
  // The prefix space makes the first word look like any later one (" Hello" rather than
  // "Hello"), so it is matched by the same merges.
  std::string prefixed;
  if (add_prefix_space_ && !text.empty() && text.front() != ' ') {
    prefixed.reserve(text.size() + 1);
    prefixed.push_back(' ');
    prefixed.append(text);
    text = prefixed;
  }
  if (text.empty()) return OkStatus();
  if (regex_ == nullptr) return emit(text);
  return SplitWithRegex(text, emit);
}

Status ByteLevelPreTokenizer::SplitWithRegex(
    std::string_view text, const std::function<Status(std::string_view)>& emit) const {
  std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> match(
      pcre2_match_data_create_from_pattern(regex_->code, nullptr), &pcre2_match_data_free);
  if (match == nullptr) return ResourceExhaustedError("out of memory for PCRE2 match data");
  const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
  size_t pos = 0;   // where the next search starts
  size_t prev = 0;  // end of the last emitted word
  while (pos < text.size()) {
    // The text was validated once by the caller; PCRE2 would otherwise re-check all of it on
    // every call, which is quadratic over a long input.
    const int rc = pcre2_match(regex_->code, subject, text.size(), pos, PCRE2_NO_UTF_CHECK,
                               match.get(), nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      return ResourceExhaustedError("splitting text into words failed at byte " +
                                    std::to_string(pos) + ": " + Pcre2Message(rc));
    }
    const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
    const size_t begin = ovector[0];
    const size_t end = ovector[1];
    // Hugging Face keeps unmatched stretches as words of their own ("Isolated" splitting).
    if (begin > prev) MQ_RETURN_IF_ERROR(emit(text.substr(prev, begin - prev)));
    if (end == begin) {
      // Unreachable with this pattern (every alternative consumes a character); stepping one
      // character guarantees progress regardless.
      if (begin >= text.size()) break;
      size_t next = begin;
      (void)utf8::DecodeNext(text, &next);
      pos = next;
      prev = begin;
      continue;
    }
    MQ_RETURN_IF_ERROR(emit(text.substr(begin, end - begin)));
    prev = pos = end;
  }
  if (prev < text.size()) MQ_RETURN_IF_ERROR(emit(text.substr(prev)));
  return OkStatus();
}

}  // namespace mq
