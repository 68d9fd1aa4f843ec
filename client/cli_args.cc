#include "cli_args.h"

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace mq::cli {

absl::StatusOr<Args> Args::Parse(int argc, char** argv, const std::set<std::string>& bool_options,
                                 const std::set<std::string>& value_options) {
  Args args;
  bool only_positionals = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (only_positionals || a.size() < 3 || a.compare(0, 2, "--") != 0) {
      if (a == "--") {
        only_positionals = true;
        continue;
      }
      args.positionals_.push_back(a);
      continue;
    }
    std::string name = a.substr(2);
    std::optional<std::string> value;
    if (auto eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (bool_options.count(name)) {
      if (value.has_value() && *value != "true" && *value != "false") {
        return absl::InvalidArgumentError(absl::StrCat("--", name, " takes no value"));
      }
      if (!value.has_value() || *value == "true") args.options_.emplace(name, "true");
      continue;
    }
    if (!value_options.count(name)) return absl::InvalidArgumentError(absl::StrCat("unknown option --", name));
    if (!value.has_value()) {
      if (i + 1 >= argc) return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
      value = argv[++i];
    }
    args.options_.emplace(name, *value);
  }
  return args;
}

std::optional<std::string> Args::Get(const std::string& name) const {
  auto range = options_.equal_range(name);
  if (range.first == range.second) return std::nullopt;
  return std::prev(range.second)->second;  // the last one wins
}

std::string Args::GetOr(const std::string& name, const std::string& fallback) const {
  return Get(name).value_or(fallback);
}

absl::StatusOr<std::string> Args::Require(const std::string& name) const {
  auto v = Get(name);
  if (!v.has_value() || v->empty()) return absl::InvalidArgumentError(absl::StrCat("--", name, " is required"));
  return *v;
}

absl::StatusOr<int64_t> Args::GetInt(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  auto v = Get(name);
  if (!v.has_value()) return fallback;
  int64_t n = 0;
  if (!absl::SimpleAtoi(*v, &n) || n < lo || n > hi) {
    return absl::InvalidArgumentError(absl::StrCat("--", name, " must be an integer in ", lo, "..", hi));
  }
  return n;
}

std::vector<std::string> Args::GetAll(const std::string& name) const {
  std::vector<std::string> out;
  auto range = options_.equal_range(name);
  for (auto it = range.first; it != range.second; ++it) out.push_back(it->second);
  return out;
}

absl::Status Args::AllowOnly(const std::set<std::string>& allowed) const {
  for (const auto& [name, value] : options_) {
    if (!allowed.count(name)) return absl::InvalidArgumentError(absl::StrCat("--", name, " does not apply to this command"));
  }
  return absl::OkStatus();
}

}  // namespace mq::cli
