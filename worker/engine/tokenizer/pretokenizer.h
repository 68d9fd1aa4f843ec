// The ByteLevel pre-tokenizer: optionally prefixes a space, then splits text into words with
// GPT-2's regex. Words come out as UTF-8; mapping their bytes to the byte-level alphabet is the
// caller's step.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>

#include "util/status.h"

namespace mq {

class ByteLevelPreTokenizer {
 public:
  // Accepts {"type":"ByteLevel",...} or a Sequence whose only step is ByteLevel.
  static StatusOr<ByteLevelPreTokenizer> FromJson(const nlohmann::json& spec);
  static StatusOr<ByteLevelPreTokenizer> Create(bool add_prefix_space, bool use_regex);

  bool add_prefix_space() const { return add_prefix_space_; }
  bool use_regex() const { return regex_ != nullptr; }

  // Calls `emit` for each word of `text`, in order; the words concatenate back to `text` (with
  // the prefix space, if one was added). `text` must be valid UTF-8 and non-empty.
  Status Split(std::string_view text, const std::function<Status(std::string_view)>& emit) const;

 private:
  struct Regex;
  ByteLevelPreTokenizer(bool add_prefix_space, std::shared_ptr<const Regex> regex)
      : add_prefix_space_(add_prefix_space), regex_(std::move(regex)) {}

  Status SplitWithRegex(std::string_view text,
                        const std::function<Status(std::string_view)>& emit) const;

  bool add_prefix_space_;
  // Shared: the compiled pattern is immutable and matching is thread-safe.
  std::shared_ptr<const Regex> regex_;
};

}  // namespace mq
