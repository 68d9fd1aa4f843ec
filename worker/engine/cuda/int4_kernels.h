// The packed-int4 kernels of W4A8 models: the decode GEMV that reads the packed weights directly,
// the unpacking to int8 that feeds cuBLASLt for many tokens, and the random fill of benchmark
// models. Weights are model/int4_pack.h's layout with rows padded to `ld` elements (a multiple of
// 16, zero nibbles beyond the row), i.e. ld/2 bytes a row.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "util/status.h"

namespace mq::cuda {

// acc[t, o] = Σ_k x[t, k]·w[o, k], exact int32, w packed 4-bit: the INT8 GEMV (int8_gemv_kernel.cu)
// with half the weight bytes. Same blocking (hd::GemvLayout over 16-element chunks), same int32
// results, so the consumer's dequantization (acc·s_x·s_w + bias) is unchanged.
struct Int4GemvParams {
  const uint8_t* w = nullptr;   // [out, k/2] packed
  const int8_t* x = nullptr;    // [tokens, ldx]
  int64_t ldx = 0;
  int32_t* acc = nullptr;       // [tokens, ldc]
  int64_t ldc = 0;
  int64_t out = 0, tokens = 0, k = 0;  // k = padded row length in elements (multiple of 16)
};
Status LaunchInt4Gemv(const Int4GemvParams& p, cudaStream_t stream);

// out [rows, ld] int8 levels ← w [rows, ld/2] packed (ld a multiple of 16).
Status LaunchUnpackInt4(const uint8_t* w, int64_t rows, int64_t ld, int8_t* out, cudaStream_t stream);

// Benchmark weights: w [rows, ld/2] packed with uniform levels in −7..7 for columns < cols and
// zero nibbles beyond; every byte depends on (seed, index) only.
Status LaunchFillRandomInt4(uint8_t* w, int64_t rows, int64_t cols, int64_t ld, uint64_t seed, cudaStream_t stream);

}  // namespace mq::cuda
