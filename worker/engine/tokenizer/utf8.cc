#include "tokenizer/utf8.h"

#include <cstdint>

namespace mq::utf8 {

size_t SequenceLength(std::string_view text, size_t pos, size_t* bad_len) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const uint8_t lead = byte(pos);
  if (lead < 0x80) return 1;
  size_t need = 0;
  // The second byte's range is narrower than 80..BF for some leads: that is what excludes
  // overlong forms, surrogates and code points past U+10FFFF.
  uint8_t lo = 0x80, hi = 0xBF;
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;
    if (lead == 0xED) hi = 0x9F;
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;
    if (lead == 0xF4) hi = 0x8F;
  } else {
    if (bad_len != nullptr) *bad_len = 1;
    return 0;
  }
  for (size_t k = 1; k <= need; ++k) {
    const size_t i = pos + k;
    const bool in_range =
        i < text.size() && byte(i) >= (k == 1 ? lo : 0x80) && byte(i) <= (k == 1 ? hi : 0xBF);
    if (!in_range) {
      if (bad_len != nullptr) *bad_len = k;
      return 0;
    }
  }
  return need + 1;
}

size_t FindInvalid(std::string_view text) {
  size_t pos = 0;
  while (pos < text.size()) {
    // ASCII runs dominate real text; skip them without the general decoder.
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    const size_t len = SequenceLength(text, pos);
    if (len == 0) return pos;
    pos += len;
  }
  return kValid;
}

char32_t DecodeNext(std::string_view text, size_t* pos) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(text[i]); };
  const size_t p = *pos;
  const uint8_t lead = byte(p);
  if (lead < 0x80) {
    *pos = p + 1;
    return lead;
  }
  if (lead < 0xE0) {
    *pos = p + 2;
    return (char32_t{lead & 0x1Fu} << 6) | (byte(p + 1) & 0x3Fu);
  }
  if (lead < 0xF0) {
    *pos = p + 3;
    return (char32_t{lead & 0x0Fu} << 12) | (char32_t{byte(p + 1) & 0x3Fu} << 6) |
           (byte(p + 2) & 0x3Fu);
  }
  *pos = p + 4;
  return (char32_t{lead & 0x07u} << 18) | (char32_t{byte(p + 1) & 0x3Fu} << 12) |
         (char32_t{byte(p + 2) & 0x3Fu} << 6) | (byte(p + 3) & 0x3Fu);
}

void AppendCodePoint(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

std::string RepairLossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t bad_len = 0;
    const size_t len = SequenceLength(bytes, pos, &bad_len);
    if (len > 0) {
      out.append(bytes.substr(pos, len));
      pos += len;
    } else {
      out.append("\xEF\xBF\xBD");  // U+FFFD
      pos += bad_len;
    }
  }
  return out;
}

}  // namespace mq::utf8
