// Command-line parsing for mqctl: positionals plus "--name value", "--name=value" and boolean
// "--flag" options, in any order. Which options take values is declared up front, so
// "--json list" is never misread.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace mq::cli {

class Args {
 public:
  // `bool_options` and `value_options` list every option any command knows (without "--").
  static absl::StatusOr<Args> Parse(int argc, char** argv, const std::set<std::string>& bool_options,
                                    const std::set<std::string>& value_options);

  const std::vector<std::string>& positionals() const { return positionals_; }
  bool Has(const std::string& name) const { return options_.count(name) > 0; }
  std::optional<std::string> Get(const std::string& name) const;
  std::string GetOr(const std::string& name, const std::string& fallback) const;
  absl::StatusOr<std::string> Require(const std::string& name) const;
  absl::StatusOr<int64_t> GetInt(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  std::vector<std::string> GetAll(const std::string& name) const;
  // INVALID_ARGUMENT naming the first given option outside `allowed`.
  absl::Status AllowOnly(const std::set<std::string>& allowed) const;

 private:
  std::vector<std::string> positionals_;
  std::multimap<std::string, std::string> options_;
};

}  // namespace mq::cli
