// A submitted QuantSpec: the engine's job-spec check through the one proto adapter
// (common/quant_spec_proto.h), plus what only the server knows: the references' syntax (resolved
// against the registry by the job service) and the output name.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::server {

// Fills unset fields with the engine's defaults and checks every field. INVALID_ARGUMENT names
// the field ("spec.seq_len ...") and the accepted values.
absl::Status NormalizeQuantSpec(mambaquant::v1::QuantSpec* spec);

// Once the model is resolved: what the engine's check says for that kind of model (config.json's
// `model_type`; a Vim classifier has no accuracy-driven mode). INVALID_ARGUMENT names the field.
absl::Status CheckQuantSpecForModel(const mambaquant::v1::QuantSpec& spec, const std::string& model_type);

// At submission, once the model is resolved: CheckQuantSpecForModel on the normalized `spec`, the
// fields that kind of model does not use refused on the `submitted` one (a Vim job and the
// text-model settings), and the text-model defaults Normalize filled removed from a Vim spec.
absl::Status FinishQuantSpecForModel(mambaquant::v1::QuantSpec* spec, const mambaquant::v1::QuantSpec& submitted,
                                     const std::string& model_type);

}  // namespace mq::server
