// A job's report as the worker hands it over: its local paths (the blob cache's model and dataset
// files, the job's output directory) replaced by the registry references they were fetched from.
// The report is stored in the registry and readable by every operator; the worker's filesystem
// layout is none of their business, and a reference is what a user can act on.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "job_executor.h"

namespace mq::worker {

// (local path, what to show instead) for a job: model_dir → spec.model, calib_path →
// spec.calib_dataset, eval_path → spec.eval_dataset, output_dir → "<output>". Empty paths are left out.
std::vector<std::pair<std::string, std::string>> ReportPathReplacements(const ExecutionRequest& request);

// Every string in `report` (recursively) equal to a local path, or beneath one ("<path>/..."),
// takes the replacement (plus the part beneath). Other strings are unchanged.
void ReplaceLocalPaths(nlohmann::json* report, const std::vector<std::pair<std::string, std::string>>& replacements);

// Every occurrence of a local path in free text (an error, a progress message) takes its
// replacement; `replacements` longest first, as ReportPathReplacements gives them.
std::string ReplaceLocalPathsInText(std::string text, const std::vector<std::pair<std::string, std::string>>& replacements);

// The report of a finished job, with its local paths replaced, also rewritten into the export's
// quant_report.json (the copy uploaded with the model). `extra` fields are merged in first.
absl::StatusOr<std::string> FinalizeReport(const ExecutionRequest& request, const std::string& report_json,
                                           const nlohmann::json& extra = nlohmann::json::object());

}  // namespace mq::worker
