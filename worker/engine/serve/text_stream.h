// Incremental detokenization of one completion, with stop strings: turns generated tokens into
// text deltas that are safe to send at once.
//
// Rules (the API's, GenerateResponse.text):
// - A token's bytes are Tokenizer::DecodeBytes({token}, skip_special_tokens = true): special
//   tokens (eos, padding) add no text, as in vLLM; nor do ids past the tokenizer's vocabulary (the
//   padding rows of a model's embedding, as HF decode skips them). For byte-level BPE the bytes of a sequence are
//   the concatenation of its tokens' bytes, so the stream works token by token, O(new bytes).
// - Held back: an incomplete UTF-8 character at the end (a lead byte whose continuation bytes have
//   not arrived yet), and the longest suffix of the text that is a proper prefix of some stop
//   string (it is released as soon as the text diverges from every stop string).
// - Ill-formed UTF-8 from the model (a stray continuation byte, an overlong form, a lead byte
//   followed by a non-continuation byte) becomes U+FFFD, one per maximal ill-formed subpart, as
//   HF decode(errors="replace") and Tokenizer::Decode do. Stop strings match that repaired text.
// - Stop strings may span tokens and begin inside one. The match that completes first (the
//   earliest end in the text; at equal ends, the longest) stops the stream: the delta ends right
//   before it, and neither it nor anything after it is ever emitted. Because the text is scanned
//   byte by byte, the result does not depend on how the text was split into tokens.
// Without a stop, text() after Finish equals Tokenizer::Decode(all ids, skip_special_tokens=true).
// The deltas always concatenate to text(), and every delta is valid UTF-8. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "util/status.h"

namespace mq {
class Tokenizer;  // tokenizer/bpe_tokenizer.h
}

namespace mq::serve {

class TextStream {
 public:
  // `tokenizer` must outlive the stream. Empty stop strings are ignored (the API refuses them).
  TextStream(const Tokenizer* tokenizer, std::vector<std::string> stop_strings);

  // Adds one generated token; returns the text that can be sent now (maybe empty). When a stop
  // string is complete, *stopped = true and the delta ends right before the match. After a stop
  // or Finish, Append is FailedPrecondition; a negative id or an id the tokenizer cannot decode is
  // its error (OutOfRange, InvalidArgument) and leaves the stream as it was.
  StatusOr<std::string> Append(int32_t token, bool* stopped);

  // The generation ended for another reason (length, eos, stop token): returns the rest of the
  // held text, an incomplete character at the very end becoming U+FFFD (that U+FFFD is not
  // matched against the stop strings: Finish never stops). Empty after a stop or a previous
  // Finish.
  std::string Finish();

  // Everything emitted so far (the concatenation of the deltas); valid UTF-8.
  const std::string& text() const { return text_; }
  // The stop string that ended the stream, or empty.
  const std::string& matched_stop() const { return matched_stop_; }

 private:
  struct Stop {
    std::string text;
    std::vector<uint32_t> fail;  // KMP failure function: fail[i] for a matched prefix of length i
    uint32_t state = 0;          // length of the longest suffix of the text that is a prefix of it
  };

  // Repairs raw_tail_ + bytes into valid UTF-8; an incomplete final character stays in raw_tail_
  // unless `final`.
  std::string Repair(std::string_view bytes, bool final);
  // Feeds valid text to the stop matchers and returns the delta that may be sent.
  std::string Push(std::string_view valid, bool* stopped);

  const Tokenizer* tokenizer_;
  std::vector<Stop> stops_;
  std::string raw_tail_;  // bytes of a character not complete yet (at most 3)
  std::string held_;      // valid text that may begin a stop string
  std::string text_;
  std::string matched_stop_;
  bool done_ = false;
};

}  // namespace mq::serve
