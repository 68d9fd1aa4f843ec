#include "report_paths.h"

#include <algorithm>
#include <filesystem>
#include <fstream>

namespace mq::worker {

std::vector<std::pair<std::string, std::string>> ReportPathReplacements(const ExecutionRequest& request) {
  std::vector<std::pair<std::string, std::string>> r;
  auto add = [&](const std::string& path, const std::string& shown) {
    if (path.empty()) return;
    r.emplace_back(path, shown);
    // The engine may report a path in its normalized form too.
    std::error_code ec;
    const std::string canonical = std::filesystem::weakly_canonical(path, ec).string();
    if (!ec && !canonical.empty() && canonical != path) r.emplace_back(canonical, shown);
  };
  add(request.model_dir, request.spec.model());
  add(request.calib_path, request.spec.calib_dataset());
  add(request.eval_path, request.spec.eval_dataset());
  add(request.output_dir, "<output>");
  // Longest first, so that a path beneath another one takes its own replacement.
  std::sort(r.begin(), r.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  return r;
}

void ReplaceLocalPaths(nlohmann::json* report, const std::vector<std::pair<std::string, std::string>>& replacements) {
  if (report->is_object() || report->is_array()) {
    for (auto& v : *report) ReplaceLocalPaths(&v, replacements);
    return;
  }
  if (!report->is_string()) return;
  const std::string& s = report->get_ref<const std::string&>();
  for (const auto& [path, shown] : replacements) {
    if (s == path) {
      *report = shown;
      return;
    }
    if (s.size() > path.size() && s.compare(0, path.size(), path) == 0 && s[path.size()] == '/') {
      *report = shown + s.substr(path.size());
      return;
    }
  }
}

std::string ReplaceLocalPathsInText(std::string text, const std::vector<std::pair<std::string, std::string>>& replacements) {
  for (const auto& [path, shown] : replacements) {
    if (path.size() < 2) continue;  // "" or "/": every slash would become a replacement
    for (size_t at = text.find(path); at != std::string::npos; at = text.find(path, at + shown.size())) {
      text.replace(at, path.size(), shown);
    }
  }
  return text;
}

absl::StatusOr<std::string> FinalizeReport(const ExecutionRequest& request, const std::string& report_json,
                                           const nlohmann::json& extra) {
  auto report = nlohmann::json::parse(report_json, nullptr, false);
  if (report.is_discarded() || !report.is_object()) return absl::InternalError("the engine's report is not a JSON object");
  for (const auto& [k, v] : extra.items()) report[k] = v;
  ReplaceLocalPaths(&report, ReportPathReplacements(request));
  const std::filesystem::path file = std::filesystem::path(request.output_dir) / "quant_report.json";
  {
    std::ofstream out(file.string(), std::ios::trunc);
    out << report.dump(2) << "\n";
    if (!out) return absl::InternalError("cannot rewrite " + file.filename().string() + " in the job's output");
  }
  return report.dump();
}

}  // namespace mq::worker
