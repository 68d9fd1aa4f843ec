#include "inference_flags.h"

#include <cmath>
#include <cstdio>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cli_context.h"
#include "terminal_text.h"

namespace mq::cli {

absl::StatusOr<std::string> InferenceModelRef(const Args& args, const std::vector<std::string>& words,
                                              const std::string& command) {
  auto flag = args.Get("model");
  if (flag.has_value() && !words.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(command, ": give the model either as --model or as an argument"));
  }
  if (words.size() > 1)
    return absl::InvalidArgumentError(absl::StrCat(command, " takes one model (--model NAME[:VERSION])"));
  if (flag.has_value()) {
    if (flag->empty()) return absl::InvalidArgumentError("--model is empty");
    return *flag;
  }
  if (words.size() == 1) return words[0];
  return absl::InvalidArgumentError(absl::StrCat(command, " needs --model NAME[:VERSION]"));
}

absl::StatusOr<std::optional<float>> OptionalFloat(const Args& args, const std::string& name) {
  auto v = args.Get(name);
  if (!v.has_value()) return std::nullopt;
  float f = 0;
  if (!absl::SimpleAtof(*v, &f) || !std::isfinite(f)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " takes a number, not \"", *v, "\""));
  }
  return f;
}

absl::StatusOr<std::optional<int64_t>> OptionalInt(const Args& args, const std::string& name, int64_t lo, int64_t hi) {
  auto v = args.Get(name);
  if (!v.has_value()) return std::nullopt;
  int64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n))
    return absl::InvalidArgumentError(absl::StrCat("--", name, " takes an integer, not \"", *v, "\""));
  if (n < lo || n > hi)
    return absl::InvalidArgumentError(absl::StrCat("--", name, " ", n, " does not fit (", lo, "..", hi, ")"));
  return n;
}

absl::StatusOr<std::optional<uint64_t>> OptionalUint64(const Args& args, const std::string& name) {
  auto v = args.Get(name);
  if (!v.has_value()) return std::nullopt;
  uint64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n)) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " takes an integer in 0..2^64-1, not \"", *v, "\""));
  }
  return n;
}

int CommandUsageError(const std::string& command, const std::string& message) {
  std::fprintf(stderr, "usage error: %s (see mqctl %s --help)\n", SanitizeTerminalText(message).c_str(),
               command.c_str());
  return kExitUsage;
}

absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& name, const std::string& value) {
  std::vector<int32_t> ids;
  for (absl::string_view part : absl::StrSplit(value, ',')) {
    part = absl::StripAsciiWhitespace(part);
    int32_t id = 0;
    if (!absl::SimpleAtoi(part, &id)) {
      return absl::InvalidArgumentError(
          absl::StrCat("--", name, " takes comma-separated token ids (1,2,3); \"", part, "\" is not one"));
    }
    ids.push_back(id);
  }
  return ids;
}

}  // namespace mq::cli
