#include "tools/command_line.h"

#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace mq::tools {

StatusOr<CommandLine> CommandLine::Parse(const std::vector<std::string>& args, const std::set<std::string>& flags,
                                         const std::set<std::string>& options) {
  CommandLine cl;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a.rfind("--", 0) != 0) {
      cl.positional_.push_back(a);
      continue;
    }
    std::string name = a.substr(2), value;
    const size_t eq = name.find('=');
    const bool inline_value = eq != std::string::npos;
    if (inline_value) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    if (flags.count(name)) {
      if (inline_value) return InvalidArgumentError("--" + name + " takes no value");
      cl.values_[name] = "true";
    } else if (options.count(name)) {
      if (!inline_value) {
        if (i + 1 >= args.size()) return InvalidArgumentError("--" + name + " needs a value");
        value = args[++i];
      }
      cl.values_[name] = value;
    } else {
      return InvalidArgumentError("unknown option --" + name);
    }
  }
  return cl;
}

std::optional<std::string> CommandLine::Get(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second;
}

StatusOr<std::string> CommandLine::Require(const std::string& name) const {
  auto v = Get(name);
  if (!v) return InvalidArgumentError("missing --" + name);
  return *v;
}

StatusOr<int64_t> CommandLine::GetInt(const std::string& name, int64_t default_value, int64_t min,
                                      int64_t max) const {
  auto v = Get(name);
  if (!v) return default_value;
  try {
    size_t used = 0;
    const long long x = std::stoll(*v, &used);
    if (used != v->size()) throw std::invalid_argument("trailing");
    if (x < min || x > max)
      return InvalidArgumentError("--" + name + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "]");
    return static_cast<int64_t>(x);
  } catch (const std::exception&) {
    return InvalidArgumentError("--" + name + " must be an integer, got \"" + *v + "\"");
  }
}

StatusOr<double> CommandLine::GetDouble(const std::string& name, double default_value) const {
  auto v = Get(name);
  if (!v) return default_value;
  try {
    size_t used = 0;
    const double x = std::stod(*v, &used);
    if (used != v->size() || !std::isfinite(x)) throw std::invalid_argument("not a finite number");
    return x;
  } catch (const std::exception&) {
    return InvalidArgumentError("--" + name + " must be a number, got \"" + *v + "\"");
  }
}

StatusOr<std::string> ReadTextFile(const std::string& path, uint64_t max_bytes) {
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) return NotFoundError(path + ": cannot open");
  const auto size = static_cast<uint64_t>(in.tellg());
  if (size > max_bytes) return ResourceExhaustedError(path + ": larger than " + std::to_string(max_bytes) + " bytes");
  in.seekg(0);
  std::string text(size, '\0');
  in.read(text.data(), static_cast<std::streamsize>(size));
  if (!in) return DataLossError(path + ": read failed");
  return text;
}

int ReportError(const Status& status) {
  std::fprintf(stderr, "mq-engine: %s\n", status.ToString().c_str());
  switch (status.code()) {
    case StatusCode::kInvalidArgument: return 2;
    case StatusCode::kNotFound: return 3;
    default: return 1;
  }
}

}  // namespace mq::tools
