// Flag parsing shared by mqctl generate and mqctl score. Values are checked for syntax only (the
// numbers parse and fit the field); ranges are the server's to enforce and to explain.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "cli_args.h"

namespace mq::cli {

// The model reference: --model, or (older spelling) the single positional argument.
absl::StatusOr<std::string> InferenceModelRef(const Args& args, const std::vector<std::string>& words,
                                              const std::string& command);

// A finite number, when the option is given.
absl::StatusOr<std::optional<float>> OptionalFloat(const Args& args, const std::string& name);
// An integer that fits [lo, hi] (the field's type), when the option is given.
absl::StatusOr<std::optional<int64_t>> OptionalInt(const Args& args, const std::string& name, int64_t lo, int64_t hi);
absl::StatusOr<std::optional<uint64_t>> OptionalUint64(const Args& args, const std::string& name);
// Prints "usage error: MESSAGE (see mqctl COMMAND --help)" and returns kExitUsage.
int CommandUsageError(const std::string& command, const std::string& message);

// "1,2,3" (spaces allowed around the commas) as int32 values.
absl::StatusOr<std::vector<int32_t>> ParseIdList(const std::string& name, const std::string& value);

}  // namespace mq::cli
