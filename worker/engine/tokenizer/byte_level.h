// GPT-2's reversible mapping between bytes and printable code points ("bytes_to_unicode"), which
// byte-level BPE vocabularies are written in: "Ġ" (U+0120) is the space byte, "Ċ" the newline.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace mq {

char32_t ByteToCodePoint(uint8_t byte);

// The byte a code point stands for, or nullopt when the code point is not in the table.
std::optional<uint8_t> CodePointToByte(char32_t cp);

// Appends the mapped form of every byte of `bytes` (each byte becomes one code point).
void AppendByteLevel(std::string_view bytes, std::string* out);

// Maps a token's text back to bytes. Returns false (leaving `out` untouched) when some code
// point of `token` is outside the table; `token` must be valid UTF-8.
bool AppendBytesFromByteLevel(std::string_view token, std::string* out);

}  // namespace mq
