// UTF-8 validation, code point iteration and lossy repair for the tokenizer.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace mq::utf8 {

inline constexpr size_t kValid = static_cast<size_t>(-1);

// Length of the well-formed sequence starting at text[pos], or 0 when it is ill-formed. When
// ill-formed, `*bad_len` (if not null) receives the length of the maximal subpart that a
// replacement character stands for (Unicode "maximal subpart" practice, as Rust's
// String::from_utf8_lossy and Python's bytes.decode(errors="replace") use).
size_t SequenceLength(std::string_view text, size_t pos, size_t* bad_len = nullptr);

// Byte offset of the first ill-formed sequence (overlong forms, surrogates and code points past
// U+10FFFF included), or kValid.
size_t FindInvalid(std::string_view text);

// Decodes the well-formed sequence at text[*pos] and advances *pos past it. Precondition: the
// text is valid UTF-8 at *pos.
char32_t DecodeNext(std::string_view text, size_t* pos);

void AppendCodePoint(char32_t cp, std::string* out);

// Replaces each ill-formed subpart with U+FFFD; valid text is returned unchanged.
std::string RepairLossy(std::string_view bytes);

}  // namespace mq::utf8
