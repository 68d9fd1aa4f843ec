#include "model/state_dtype.h"

#include <vector>

namespace mq {

const char* StateDtypeName(StateDtype d) {
  switch (d) {
    case StateDtype::kF32: return "fp32";
    case StateDtype::kF16: return "fp16";
    case StateDtype::kBF16: return "bf16";
    case StateDtype::kInt8: return "int8";
  }
  return "unknown";
}

StatusOr<StateDtype> ParseStateDtype(const std::string& name) {
  for (StateDtype d : {StateDtype::kF32, StateDtype::kF16, StateDtype::kBF16, StateDtype::kInt8})
    if (name == StateDtypeName(d)) return d;
  return InvalidArgumentError("state dtype must be fp32, fp16, bf16 or int8, not '" + name + "'");
}

void RoundStateRows(StateDtype d, float* x, int64_t rows, int64_t M) {
  if (d == StateDtype::kF32) return;
  std::vector<uint8_t> row(static_cast<size_t>(M) * 4);
  const int m = static_cast<int>(M);
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * M;
    float scale = 1.0f;
    state::StoreRow(d, xr, m, row.data(), 0, &scale);
    state::LoadRow(d, row.data(), 0, m, scale, xr);
  }
}

}  // namespace mq
