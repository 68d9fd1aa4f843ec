#include "tokenizer/byte_level.h"

#include <array>

#include "tokenizer/utf8.h"

namespace mq {
namespace {

struct ByteLevelTables {
  std::array<char32_t, 256> to_cp{};
  // UTF-8 of to_cp, precomputed because mapping runs once per input byte.
  std::array<std::string, 256> to_utf8;
  // Every mapped code point is below U+0144, so a flat table covers the inverse.
  std::array<int16_t, 0x144> from_cp{};

  ByteLevelTables() {
    from_cp.fill(-1);
    // Printable Latin-1 bytes keep their own code point; the rest are moved, in byte order, to
    // U+0100 onwards. This is GPT-2's choice and every byte-level vocabulary depends on it.
    const auto keeps_own = [](int b) {
      return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
    };
    int next = 0;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp =
          keeps_own(b) ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + next++);
      to_cp[b] = cp;
      utf8::AppendCodePoint(cp, &to_utf8[b]);
      from_cp[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteLevelTables& Tables() {
  static const ByteLevelTables tables;
  return tables;
}

}  // namespace

char32_t ByteToCodePoint(uint8_t byte) { return Tables().to_cp[byte]; }

std::optional<uint8_t> CodePointToByte(char32_t cp) {
  const auto& t = Tables();
  if (cp >= t.from_cp.size() || t.from_cp[cp] < 0) return std::nullopt;
  return static_cast<uint8_t>(t.from_cp[cp]);
}

void AppendByteLevel(std::string_view bytes, std::string* out) {
  const auto& t = Tables();
  for (const char c : bytes) out->append(t.to_utf8[static_cast<uint8_t>(c)]);
}

bool AppendBytesFromByteLevel(std::string_view token, std::string* out) {
  const size_t original = out->size();
  size_t pos = 0;
  while (pos < token.size()) {
    const std::optional<uint8_t> b = CodePointToByte(utf8::DecodeNext(token, &pos));
    if (!b) {
      out->resize(original);
      return false;
    }
    out->push_back(static_cast<char>(*b));
  }
  return true;
}

}  // namespace mq
