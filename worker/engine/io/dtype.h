// Element types of stored tensors, as safetensors names them.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "util/status.h"

namespace mq {

enum class DType { kF32, kF16, kBF16, kI8, kI32, kI64, kU8 };  // kU8: raw bytes (packed 4-bit weights)

size_t DTypeSize(DType dtype);
const char* DTypeName(DType dtype);  // "F32", "BF16", ...
StatusOr<DType> ParseDType(std::string_view name);

float HalfToFloat(uint16_t bits);
float BFloat16ToFloat(uint16_t bits);
uint16_t FloatToHalf(float value);      // round to nearest even
uint16_t FloatToBFloat16(float value);  // round to nearest even

}  // namespace mq
