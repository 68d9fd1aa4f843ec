// A streaming scan of stored floating-point tensors for NaN and Inf: the bits are tested where
// they lie in the mapping (no conversion, no copy), so a commit-time check of a multi-GB model
// costs one sequential read.
#pragma once

#include <cstdint>
#include <optional>

#include "io/safetensors.h"

namespace mq::format {

// Index of the first element of `t` that is NaN or ±Inf; nullopt when all are finite or the
// dtype is an integer type.
std::optional<int64_t> FindNonFinite(const TensorView& t);

}  // namespace mq::format
