// Minimal `--key value` / `--flag` parsing for the mq-engine subcommands.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "util/status.h"

namespace mq::tools {

class CommandLine {
 public:
  // `flags`: options that take no value. Every other `--name` takes the next argument.
  static StatusOr<CommandLine> Parse(const std::vector<std::string>& args, const std::set<std::string>& flags,
                                     const std::set<std::string>& options);

  bool Has(const std::string& name) const { return values_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  StatusOr<std::string> Require(const std::string& name) const;
  StatusOr<int64_t> GetInt(const std::string& name, int64_t default_value, int64_t min, int64_t max) const;
  // A whole finite number (no trailing text); its range is the caller's (the job spec's) check.
  StatusOr<double> GetDouble(const std::string& name, double default_value) const;
  const std::vector<std::string>& positional() const { return positional_; }

 private:
  std::map<std::string, std::string> values_;
  std::vector<std::string> positional_;
};

// Reads a whole file (bounded), for texts given with --text/--file.
StatusOr<std::string> ReadTextFile(const std::string& path, uint64_t max_bytes = 1ull << 30);

// Prints "mq-engine: <message>" to stderr and returns the exit code for `status`.
int ReportError(const Status& status);

}  // namespace mq::tools
