#include "job_spec_validation.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "name_validation.h"
#include "quant_spec_proto.h"
#include "vim_artifact_check.h"

namespace mq::server {
namespace {

absl::Status CheckRef(const char* field, const std::string& ref, bool required) {
  if (ref.empty()) {
    return required ? absl::InvalidArgumentError(absl::StrCat(field, " is required")) : absl::OkStatus();
  }
  auto parsed = ParseRef(ref);
  if (!parsed.ok()) return absl::InvalidArgumentError(absl::StrCat(field, ": ", parsed.status().message()));
  return absl::OkStatus();
}

}  // namespace

absl::Status NormalizeQuantSpec(mambaquant::v1::QuantSpec* spec) {
  if (absl::Status s = CheckRef("spec.model", spec->model(), true); !s.ok()) return s;
  if (absl::Status s = CheckRef("spec.calib_dataset", spec->calib_dataset(), true); !s.ok()) return s;
  if (absl::Status s = CheckRef("spec.eval_dataset", spec->eval_dataset(), false); !s.ok()) return s;
  // Names, sizes and percentages: the engine's check, on the options the worker will build.
  if (auto options = QuantizeOptionsFromProto(*spec); !options.ok()) return options.status();
  if (absl::Status s = CheckSubmittedQuantSpec(*spec); !s.ok()) return s;
  FillQuantSpecDefaults(spec);
  if (!spec->output_name().empty()) {
    absl::Status s = ValidateName(spec->output_name());
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.output_name: ", s.message()));
  }
  return absl::OkStatus();
}

absl::Status CheckQuantSpecForModel(const mambaquant::v1::QuantSpec& spec, const std::string& model_type) {
  const quant::JobModel model = model_type == kVimModelType ? quant::JobModel::kVim : quant::JobModel::kText;
  auto options = QuantizeOptionsFromProto(spec, model);
  return options.ok() ? absl::OkStatus() : options.status();
}

absl::Status FinishQuantSpecForModel(mambaquant::v1::QuantSpec* spec, const mambaquant::v1::QuantSpec& submitted,
                                     const std::string& model_type) {
  if (absl::Status s = CheckQuantSpecForModel(*spec, model_type); !s.ok()) return s;
  const quant::JobModel model = model_type == kVimModelType ? quant::JobModel::kVim : quant::JobModel::kText;
  if (absl::Status s = CheckSubmittedQuantSpecForModel(submitted, model); !s.ok()) return s;
  if (model == quant::JobModel::kVim) {
    spec->clear_seq_len();
    spec->clear_eval_window();
  }
  return absl::OkStatus();
}

}  // namespace mq::server
