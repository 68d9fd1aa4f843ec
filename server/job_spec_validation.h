// Defaults and limits of a submitted QuantSpec. References are checked for syntax here and
// resolved against the registry by the job service.
#pragma once

#include "absl/status/status.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::server {

// Fills unset fields with their documented defaults and checks every field. INVALID_ARGUMENT
// names the field and the accepted values.
absl::Status NormalizeQuantSpec(mambaquant::v1::QuantSpec* spec);

}  // namespace mq::server
