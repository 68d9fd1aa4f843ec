#include "model/int4_pack.h"

#include <atomic>
#include <string>

#include "cpu/parallel_for.h"

namespace mq {

StatusOr<std::vector<uint8_t>> PackInt4Rows(const int8_t* q, int64_t rows, int64_t cols, int64_t row_bytes) {
  if (rows < 0 || cols < 0 || row_bytes < Int4RowBytes(cols))
    return InvalidArgumentError("PackInt4Rows: " + std::to_string(row_bytes) + " bytes cannot hold a row of " +
                                std::to_string(cols) + " 4-bit values");
  for (int64_t i = 0; i < rows * cols; ++i)
    if (q[i] < -kInt4MaxLevel || q[i] > kInt4MaxLevel)
      return InvalidArgumentError("PackInt4Rows: value " + std::to_string(q[i]) + " at row " + std::to_string(i / cols) +
                                  " column " + std::to_string(i % cols) + " is outside -7..7");
  std::vector<uint8_t> out(static_cast<size_t>(rows * row_bytes), 0);
  // Rows over the cores: the CUDA upload of a 2.8B model packs 2.7e9 weights.
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int8_t* src = q + r * cols;
      uint8_t* dst = out.data() + r * row_bytes;
      for (int64_t c = 0; c < cols; ++c) dst[c / 2] |= static_cast<uint8_t>(Int4Encode(src[c]) << (4 * (c & 1)));
    }
  });
  return out;
}

namespace {

// Decodes row r; false at the first bad nibble, which *col then names.
bool UnpackRow(const uint8_t* src, int64_t cols, int64_t row_bytes, int8_t* dst, int64_t* col) {
  for (int64_t c = 0; c < 2 * row_bytes; ++c) {
    const uint8_t nibble = (src[c / 2] >> (4 * (c & 1))) & 0x0Fu;
    if (c < cols ? nibble == 0x08u : nibble != 0) {
      *col = c;
      return false;
    }
    if (c < cols) dst[c] = Int4Decode(nibble);
  }
  return true;
}

}  // namespace

Status UnpackInt4Rows(const uint8_t* packed, int64_t size, int64_t rows, int64_t cols, int64_t row_bytes, int8_t* out) {
  if (rows < 0 || cols < 0 || row_bytes < Int4RowBytes(cols))
    return InvalidArgumentError("UnpackInt4Rows: " + std::to_string(row_bytes) + " bytes cannot hold a row of " +
                                std::to_string(cols) + " 4-bit values");
  if (row_bytes == 0 ? size != 0 : (rows > size / row_bytes || rows * row_bytes != size))
    return InvalidArgumentError("UnpackInt4Rows: " + std::to_string(size) + " bytes are not " + std::to_string(rows) +
                                " rows of " + std::to_string(row_bytes));
  // Rows over the cores (a 2.8B export holds 2.7e9 weights); the first bad row, if any, is
  // found again serially so that the error names the first one.
  std::atomic<bool> bad{false};
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    int64_t col = 0;
    for (int64_t r = r0; r < r1; ++r)
      if (!UnpackRow(packed + r * row_bytes, cols, row_bytes, out + r * cols, &col)) bad = true;
  });
  if (!bad) return OkStatus();
  for (int64_t r = 0; r < rows; ++r) {
    int64_t c = 0;
    if (UnpackRow(packed + r * row_bytes, cols, row_bytes, out + r * cols, &c)) continue;
    if (c < cols)
      return DataLossError("4-bit weight at row " + std::to_string(r) + " column " + std::to_string(c) +
                           " is -8 (nibble 0x8), outside the symmetric levels -7..7");
    return DataLossError("padding nibble at row " + std::to_string(r) + " column " + std::to_string(c) +
                         " is not zero");
  }
  return OkStatus();
}

}  // namespace mq
