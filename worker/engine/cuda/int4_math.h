// Unpacking of packed 4-bit weights (model/int4_pack.h) into the int8 words that dp4a consumes,
// shared by the int4 kernels (int4_gemv_kernel.cu, decode_kernels.cu's packed layer kernels) and
// their CPU twin
// (tests/engine/cuda_int4_twin_test.cc): the same source line runs on both sides, with the byte
// permutation emulated on the host exactly as PTX prmt defines it, so the twin checks the selector
// constants too. Plain C++ when not under nvcc.
#pragma once

#include <cstdint>

#include "cuda/hd_math.h"

namespace mq::cuda::hd {

// The decode layer kernels' GEMV (decode_kernels.cu) over packed rows: the same plan
// (DecodeGemvPlan, chunks of 16 weights), a chunk loaded as 8 bytes at row·ld/2 + c·8, and twice
// the INT8 kernels' chunks in flight per row and lane so that a warp has as many bytes outstanding.
inline constexpr int kDecodeInt4Unroll = 2 * kDecodeUnroll;

// PTX prmt (default mode) / __byte_perm: byte i of the result is byte (s >> 4i) & 7 of the
// eight bytes {x.b0..x.b3, y.b0..y.b3}.
MQ_HD uint32_t BytePerm(uint32_t x, uint32_t y, uint32_t s) {
#if defined(__CUDA_ARCH__)
  return __byte_perm(x, y, s);
#else
  const uint64_t xy = static_cast<uint64_t>(y) << 32 | x;
  uint32_t r = 0;
  for (int i = 0; i < 4; ++i) r |= static_cast<uint32_t>((xy >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
  return r;
#endif
}

// One 32-bit word of a packed row (bytes 4j..4j+3, little-endian: elements 8j..8j+7, element 2i
// in the low nibble of byte i) → two dp4a words of int8 levels, elements 8j..8j+3 and 8j+4..8j+7.
// Sign extension of a nibble held in a byte: bit 3 set → OR 0xF0, and (b & 0x08)·0x1E = 0xF0 per
// byte without carries between bytes.
MQ_HD void UnpackInt4Word(uint32_t w, int32_t* e0123, int32_t* e4567) {
  uint32_t lo = w & 0x0F0F0F0Fu;         // bytes: elements 0, 2, 4, 6
  uint32_t hi = (w >> 4) & 0x0F0F0F0Fu;  // bytes: elements 1, 3, 5, 7
  lo |= (lo & 0x08080808u) * 0x1Eu;
  hi |= (hi & 0x08080808u) * 0x1Eu;
  *e0123 = static_cast<int32_t>(BytePerm(lo, hi, 0x5140u));  // lo.b0 hi.b0 lo.b1 hi.b1
  *e4567 = static_cast<int32_t>(BytePerm(lo, hi, 0x7362u));  // lo.b2 hi.b2 lo.b3 hi.b3
}

// Σ of the 16 products of one 8-byte packed chunk (16 weights, words w0, w1) with 16 int8
// activations (four dp4a words x0..x3), added to acc in dp4a order: exact int32, and the same
// products the INT8 GEMV forms for these weights.
MQ_HD int32_t Int4Dot16(uint32_t w0, uint32_t w1, int32_t x0, int32_t x1, int32_t x2, int32_t x3, int32_t acc) {
  int32_t a, b;
  UnpackInt4Word(w0, &a, &b);
  acc = Dp4a(a, x0, acc);
  acc = Dp4a(b, x1, acc);
  UnpackInt4Word(w1, &a, &b);
  acc = Dp4a(a, x2, acc);
  acc = Dp4a(b, x3, acc);
  return acc;
}

}  // namespace mq::cuda::hd
