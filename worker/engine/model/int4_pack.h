// How W4A8 weights occupy bytes: the one definition of the packed 4-bit layout, used by the export
// writer, the loader (quant/quantized_model_io.cc) and the CUDA upload (cuda/cuda_mamba_model.cu,
// whose GEMV unpacks the same bytes in registers: cuda/hd_math.h Int4Word).
//
//   Levels:  symmetric −7..7 (QuantizeWeightRows with bits = 4). A level is stored as its 4-bit
//            two's complement: 0..7 → 0x0..0x7, −1..−7 → 0xF..0x9. 0x8 (−8) is never written and is
//            rejected on read, so a corrupt nibble cannot enter the integer arithmetic.
//   Order:   row-major; within a row, element 2j sits in the low nibble of byte j and element 2j+1
//            in its high nibble (byte j = lo | hi << 4).
//   Padding: a row of `cols` elements is stored in row_bytes ≥ Int4RowBytes(cols) = ⌈cols/2⌉
//            bytes; the nibbles past `cols` (the high nibble of an odd row's last byte, and any
//            further padding, e.g. the GPU's rows padded to 16 elements) are zero, and readers
//            check that they are.
#pragma once

#include <cstdint>
#include <vector>

#include "util/status.h"

namespace mq {

inline constexpr int kInt4MaxLevel = 7;

// Bytes of one packed row of `cols` 4-bit values (no padding beyond the odd nibble).
constexpr int64_t Int4RowBytes(int64_t cols) { return (cols + 1) / 2; }

// One nibble ↔ one level (level in −8..7 on decode; encoding takes −7..7).
constexpr uint8_t Int4Encode(int8_t level) { return static_cast<uint8_t>(level) & 0x0Fu; }
constexpr int8_t Int4Decode(uint8_t nibble) {
  return static_cast<int8_t>((nibble & 0x08u) ? static_cast<int>(nibble & 0x0Fu) - 16 : static_cast<int>(nibble & 0x0Fu));
}

// q [rows, cols] (levels −7..7) → [rows, row_bytes] packed, row_bytes ≥ Int4RowBytes(cols), the
// padding nibbles zero. InvalidArgument if a value is outside −7..7 or row_bytes is too small.
StatusOr<std::vector<uint8_t>> PackInt4Rows(const int8_t* q, int64_t rows, int64_t cols, int64_t row_bytes);

// packed [rows, row_bytes] (`size` bytes in all) → out [rows, cols] levels. DataLoss naming the
// row and column of the first nibble that is 0x8, or of a padding nibble that is not zero;
// InvalidArgument if `size` is not rows·row_bytes or row_bytes < Int4RowBytes(cols). Never
// reads past packed + size.
Status UnpackInt4Rows(const uint8_t* packed, int64_t size, int64_t rows, int64_t cols, int64_t row_bytes, int8_t* out);

}  // namespace mq
