// Text from the server shown on a terminal: generated text, model names, error messages. A
// terminal interprets control characters and escape sequences (cursor movement, colours, window
// titles, hyperlinks, even answers typed back into the shell), so such bytes are made visible
// instead of being passed through.
#pragma once

#include <cstddef>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"

namespace google::protobuf {
class Message;
}

namespace mq::cli {

// Returns `text` with every C0 control character (U+0000..U+001F, ESC included), DEL and C1 control
// (U+0080..U+009F) written as a visible escape ("\x1b", "\u009b"), and every byte that is not part
// of valid UTF-8 replaced by U+FFFD. With `keep_newlines`, '\n' and '\t' pass unchanged (running
// text); without, they are escaped too ("\n", "\t": one-line values such as a stop string).
std::string SanitizeTerminalText(absl::string_view text, bool keep_newlines = true);

// The offset of the first byte that is not well-formed UTF-8 (the rule SanitizeTerminalText
// replaces bytes by), or nullopt. Protobuf string fields must be UTF-8: a request carrying anything
// else fails to parse on the server, before any check could explain it, so mqctl refuses it.
std::optional<size_t> FirstInvalidUtf8(absl::string_view text);

// `text` sanitized without newlines and in double quotes ("\"" and "\\" escaped): for showing a
// value whose exact bytes matter, such as a stop string.
std::string QuoteForTerminal(absl::string_view text);

// Every string field of `message` (nested messages, repeated fields and maps included) sanitized
// without newlines, so a value printed on its own line cannot forge others. For text output of
// server replies (jobs, artifacts); JSON output escapes by itself.
void SanitizeMessageStrings(google::protobuf::Message* message);

// A copy of `message` with SanitizeMessageStrings applied.
template <class M>
M ForTerminal(M message) {
  SanitizeMessageStrings(&message);
  return message;
}

}  // namespace mq::cli
