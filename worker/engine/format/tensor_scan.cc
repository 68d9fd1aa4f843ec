#include "format/tensor_scan.h"

#include <cstring>

namespace mq::format {
namespace {

// An IEEE value is NaN or Inf exactly when its exponent bits are all ones.
template <typename Bits, Bits kExponent>
std::optional<int64_t> Scan(const uint8_t* p, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    Bits b;
    std::memcpy(&b, p + static_cast<size_t>(i) * sizeof(Bits), sizeof(Bits));
    if ((b & kExponent) == kExponent) return i;
  }
  return std::nullopt;
}

}  // namespace

std::optional<int64_t> FindNonFinite(const TensorView& t) {
  const int64_t n = t.numel();
  switch (t.dtype) {
    case DType::kF32: return Scan<uint32_t, 0x7F800000u>(t.data, n);
    case DType::kF16: return Scan<uint16_t, 0x7C00u>(t.data, n);
    case DType::kBF16: return Scan<uint16_t, 0x7F80u>(t.data, n);
    default: return std::nullopt;
  }
}

}  // namespace mq::format
