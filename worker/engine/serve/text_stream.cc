#include "serve/text_stream.h"

#include <algorithm>
#include <utility>

#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/utf8.h"

namespace mq::serve {

TextStream::TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop_strings) : tokenizer_(tokenizer) {
  for (std::string& text : stop_strings) {
    if (text.empty()) continue;
    Stop s;
    s.text = std::move(text);
    const size_t n = s.text.size();
    s.fail.assign(n + 1, 0);
    // fail[L]: the longest proper prefix of text[0, L) that is also its suffix (KMP), so each
    // byte of output costs O(1) amortized per stop string however long the strings are.
    for (size_t len = 2; len <= n; ++len) {
      uint32_t k = s.fail[len - 1];
      while (k > 0 && s.text[len - 1] != s.text[k]) k = s.fail[k];
      if (s.text[len - 1] == s.text[k]) ++k;
      s.fail[len] = k;
    }
    stops_.push_back(std::move(s));
  }
}

std::string TextStream::Repair(std::string_view bytes, bool final) {
  std::string raw = std::move(raw_tail_);
  raw_tail_.clear();
  raw.append(bytes);
  std::string out;
  out.reserve(raw.size());
  size_t pos = 0;
  while (pos < raw.size()) {
    size_t bad = 0;
    const size_t len = utf8::SequenceLength(raw, pos, &bad);
    if (len > 0) {
      out.append(raw, pos, len);
      pos += len;
      continue;
    }
    // A valid lead whose check ran off the end is a character still arriving, not an error.
    const auto lead = static_cast<uint8_t>(raw[pos]);
    if (!final && lead >= 0xC2 && lead <= 0xF4 && pos + bad == raw.size()) {
      raw_tail_ = raw.substr(pos);
      break;
    }
    out.append("\xEF\xBF\xBD");  // U+FFFD
    pos += bad;
  }
  return out;
}

std::string TextStream::Push(std::string_view valid, bool* stopped) {
  if (stops_.empty()) {
    text_.append(valid);
    return std::string(valid);
  }
  const size_t base = held_.size();
  held_.append(valid);
  for (size_t j = base; j < held_.size(); ++j) {
    const char c = held_[j];
    const Stop* hit = nullptr;
    for (Stop& s : stops_) {
      uint32_t st = s.state;
      while (st > 0 && s.text[st] != c) st = s.fail[st];
      if (s.text[st] == c) ++st;
      s.state = st;
      if (st == s.text.size() && (hit == nullptr || s.text.size() > hit->text.size())) hit = &s;
    }
    if (hit != nullptr) {
      // Every state is at most held_'s length (held_ keeps the longest one), so the match
      // starts inside held_: nothing of it was emitted.
      const size_t start = j + 1 - hit->text.size();
      std::string delta = held_.substr(0, start);
      text_ += delta;
      matched_stop_ = hit->text;
      held_.clear();
      done_ = true;
      *stopped = true;
      return delta;
    }
  }
  uint32_t keep = 0;
  for (const Stop& s : stops_) keep = std::max(keep, s.state);
  const size_t emit = held_.size() - std::min<size_t>(keep, held_.size());
  std::string delta = held_.substr(0, emit);
  held_.erase(0, emit);
  text_ += delta;
  return delta;
}

StatusOr<std::string> TextStream::Append(int32_t token, bool* stopped) {
  bool local = false;
  if (stopped == nullptr) stopped = &local;
  *stopped = false;
  if (done_) {
    return FailedPreconditionError(matched_stop_.empty() ? "TextStream::Append after Finish"
                                                         : "TextStream::Append after a stop string matched");
  }
  // Ids past the tokenizer's vocabulary are the padding rows of the model's embedding (released
  // Mamba checkpoints pad 50277 tokens to 50280): no text, as HF decode skips them.
  if (token >= tokenizer_->vocab_size()) return std::string();
  MQ_ASSIGN_OR_RETURN(const std::string bytes, tokenizer_->DecodeBytes({token}, /*skip_special_tokens=*/true));
  if (bytes.empty()) return std::string();
  return Push(Repair(bytes, /*final=*/false), stopped);
}

std::string TextStream::Finish() {
  if (done_) return std::string();
  done_ = true;
  // Not matched against the stop strings: the generation already ended for another reason, and
  // a U+FFFD standing for a cut-off character is no text the model completed.
  std::string delta = std::move(held_);
  held_.clear();
  delta += Repair({}, /*final=*/true);
  text_ += delta;
  return delta;
}

}  // namespace mq::serve
