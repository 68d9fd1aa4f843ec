#include "engine_model_check.h"

#include "format/model_check.h"
#include "quant/quant_spec.h"

namespace mq::server {
namespace {

// Every refusal is the uploader's to fix: INVALID_ARGUMENT, whatever the reader's own code.
absl::Status Refused(const mq::Status& s) { return absl::InvalidArgumentError(s.message()); }

absl::StatusOr<mq::format::ModelSummary> Summary(const std::map<std::string, std::string>& files) {
  auto summary = mq::format::CheckModelFiles(files);
  if (!summary.ok()) return Refused(summary.status());
  return std::move(summary).value();
}

}  // namespace

absl::StatusOr<std::string> CheckModelFormat(const std::map<std::string, std::string>& files) {
  auto summary = Summary(files);
  if (!summary.ok()) return summary.status();
  return summary->model_type;
}

absl::StatusOr<std::string> CheckModelWithEngine(const std::map<std::string, std::string>& files) {
  auto summary = Summary(files);
  if (!summary.ok()) return summary.status();
  if (summary->quantized) {
    auto spec = mq::quant::QuantSpec::FromJson(summary->quantization_config);
    if (!spec.ok()) return Refused(spec.status().WithContext("config.json"));
  }
  return summary->model_type;
}

}  // namespace mq::server
