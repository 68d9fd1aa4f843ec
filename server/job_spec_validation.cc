#include "job_spec_validation.h"

#include <initializer_list>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "name_validation.h"

namespace mq::server {
namespace {

absl::Status OneOf(const char* field, std::string* value, const char* fallback,
                   std::initializer_list<const char*> allowed) {
  if (value->empty()) *value = fallback;
  for (const char* a : allowed) {
    if (*value == a) return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(field, " must be one of ", absl::StrJoin(allowed, ", "), "; got \"",
                                                 value->substr(0, 64), "\""));
}

absl::Status InRange(const char* field, int32_t value, int32_t lo, int32_t hi) {
  if (value < lo || value > hi) {
    return absl::InvalidArgumentError(absl::StrCat(field, " must be in ", lo, "..", hi, "; got ", value));
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status NormalizeQuantSpec(mambaquant::v1::QuantSpec* spec) {
  if (spec->model().empty()) return absl::InvalidArgumentError("spec.model is required");
  auto ref = ParseRef(spec->model());
  if (!ref.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.model: ", ref.status().message()));
  if (spec->calib_dataset().empty()) return absl::InvalidArgumentError("spec.calib_dataset is required");
  ref = ParseRef(spec->calib_dataset());
  if (!ref.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.calib_dataset: ", ref.status().message()));
  if (!spec->eval_dataset().empty()) {
    ref = ParseRef(spec->eval_dataset());
    if (!ref.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.eval_dataset: ", ref.status().message()));
  }
  absl::Status s = OneOf("spec.preset", spec->mutable_preset(), "mambaquant", {"rtn", "smoothquant", "quarot", "mambaquant"});
  if (s.ok()) s = OneOf("spec.bits", spec->mutable_bits(), "w8a8", {"w8a8", "w4a8"});
  if (s.ok()) s = OneOf("spec.scope", spec->mutable_scope(), "linear", {"linear", "full"});
  if (s.ok()) s = OneOf("spec.act_granularity", spec->mutable_act_granularity(), "per_token", {"per_token", "per_tensor"});
  if (s.ok() && !spec->backend().empty()) s = OneOf("spec.backend", spec->mutable_backend(), "", {"cpu", "cuda"});
  if (s.ok()) s = OneOf("spec.r1_covariance", spec->mutable_r1_covariance(), "all_layers", {"all_layers", "layer0"});
  if (s.ok()) s = OneOf("spec.weight_clip", spec->mutable_weight_clip(), "auto", {"auto", "max", "mse"});
  if (s.ok()) {
    s = OneOf("spec.state_granularity", spec->mutable_state_granularity(), "per_step_channel",
              {"per_step_channel", "per_step"});
  }
  if (s.ok() && spec->has_act_percentile() && !(spec->act_percentile() > 0.0 && spec->act_percentile() <= 100.0)) {
    s = absl::InvalidArgumentError(absl::StrCat("spec.act_percentile must be in (0, 100]; got ", spec->act_percentile()));
  }
  if (s.ok() && spec->has_tolerable_loss_percent() &&
      !(spec->tolerable_loss_percent() > 0.0 && spec->tolerable_loss_percent() <= 100.0)) {
    s = absl::InvalidArgumentError(
        absl::StrCat("spec.tolerable_loss_percent must be in (0, 100]; got ", spec->tolerable_loss_percent()));
  }
  if (spec->num_samples() == 0) spec->set_num_samples(128);
  if (spec->seq_len() == 0) spec->set_seq_len(256);
  if (spec->eval_window() == 0) spec->set_eval_window(256);
  if (s.ok()) s = InRange("spec.num_samples", spec->num_samples(), 1, 65536);
  if (s.ok()) s = InRange("spec.seq_len", spec->seq_len(), 1, 65536);
  if (s.ok()) s = InRange("spec.eval_window", spec->eval_window(), 1, 65536);
  if (!s.ok()) return s;
  if (!spec->output_name().empty()) {
    s = ValidateName(spec->output_name());
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("spec.output_name: ", s.message()));
  }
  return absl::OkStatus();
}

}  // namespace mq::server
