// The storage dtype of the recurrent-state cache (conv state [E, K−1] and SSM state [E, N] per
// layer and sequence), and the one definition of how a value is stored and read back, shared by
// the CPU reference (cpu/mamba_forward.cc) and the CUDA kernels (the same source lines run on both
// sides; plain C++ when not under nvcc).
//
// Semantics: the forward computes in float32; the state is ROUNDED when it is stored between
// forward calls (after a prefill and after every decode step) and read back as float:
//   fp32  exact (the default: nothing changes, bit for bit)
//   fp16  IEEE binary16, round to nearest even (overflow to ±inf, subnormals kept)
//   bf16  bfloat16, round to nearest even
//   int8  per (sequence, layer, channel) row of M values (M = N for the SSM state, K−1 for the
//         conv state): scale s = max|x|/127 (1 for an all-zero row), recomputed at every store;
//         code q = clamp(rint(x·(1/s)), −127, 127), round half to even; read back as q·s. The
//         rule is the one of the INT8 activations (cuda/hd_math.h ScaleFromAbsMax/QuantizeValue).
// Why narrower: at batch 64 the float32 SSM state of the 2.8b shape is 21 MB a layer, read and
// written every decode step (docs/benchmarks.md); 16 bits halve that traffic, int8 quarters it.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "model/float_bits.h"
#include "util/status.h"

#if defined(__CUDACC__)
#define MQ_STATE_HD __host__ __device__ __forceinline__
#else
#define MQ_STATE_HD inline
#endif

namespace mq {

enum class StateDtype : int32_t { kF32 = 0, kF16 = 1, kBF16 = 2, kInt8 = 3 };

// "fp32", "fp16", "bf16", "int8": the names of --state-dtype.
const char* StateDtypeName(StateDtype d);
// INVALID_ARGUMENT naming the accepted values for anything else.
StatusOr<StateDtype> ParseStateDtype(const std::string& name);

namespace state {

MQ_STATE_HD constexpr int DtypeBytes(StateDtype d) {
  return d == StateDtype::kF32 ? 4 : d == StateDtype::kInt8 ? 1 : 2;
}
// Whether rows of this dtype carry a scale.
MQ_STATE_HD bool HasScale(StateDtype d) { return d == StateDtype::kInt8; }

// float → binary16 bits, round to nearest even.
MQ_STATE_HD uint16_t FloatToHalfBits(float x) {
  const uint32_t u = FloatBits(x);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) return static_cast<uint16_t>(sign | 0x7c00u | (au > 0x7f800000u ? 0x200u : 0u));  // inf, NaN
  if (au >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // ≥ 65520 rounds to inf
  if (au < 0x38800000u) {
    // Subnormal half (|x| < 2^−14) or zero: value = m·2^−24 with m = round(|x|·2^24).
    if (au < 0x33000000u) return static_cast<uint16_t>(sign);  // |x| ≤ 2^−25 rounds to 0 (tie to even 0)
    const uint32_t e = au >> 23;                          // 102 … 112
    const uint32_t mant = (au & 0x7fffffu) | 0x800000u;   // 24 bits
    const uint32_t shift = 126u - e;                       // 14 … 24: mant·2^(e−150) / 2^−24
    const uint32_t q = mant >> shift, rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    const uint32_t r = q + ((rem > half || (rem == half && (q & 1u))) ? 1u : 0u);
    return static_cast<uint16_t>(sign | r);  // r = 0x400 carries into the smallest normal
  }
  // Normal: rebias the exponent, round the 13 dropped mantissa bits to nearest even (a carry
  // into the exponent is the correct result, up to inf).
  const uint32_t base = ((au >> 13) - (112u << 10));
  const uint32_t rem = au & 0x1fffu;
  const uint32_t r = base + ((rem > 0x1000u || (rem == 0x1000u && (base & 1u))) ? 1u : 0u);
  return static_cast<uint16_t>(sign | r);
}

MQ_STATE_HD float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
  if (e == 0) {
    // ±m·2^−24, exact in float.
    const float v = static_cast<float>(m) * 5.9604644775390625e-8f;
    return sign ? -v : v;
  }
  if (e == 31) return BitsFloat(sign | 0x7f800000u | (m << 13));
  return BitsFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// float → bfloat16 bits, round to nearest even (NaN stays a quiet NaN).
MQ_STATE_HD uint16_t FloatToBf16Bits(float x) {
  const uint32_t u = FloatBits(x);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  return static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
MQ_STATE_HD float Bf16BitsToFloat(uint16_t b) { return BitsFloat(static_cast<uint32_t>(b) << 16); }

// int8 rows: the scale from the row's absolute maximum and the code of one value.
MQ_STATE_HD float Int8Scale(float amax) { return amax > 0.0f ? amax / 127.0f : 1.0f; }
MQ_STATE_HD int8_t Int8Code(float x, float inv_scale) {
#if defined(__CUDA_ARCH__)
  const float v = fminf(fmaxf(rintf(x * inv_scale), -127.0f), 127.0f);
#else
  float v = std::nearbyint(x * inv_scale);
  v = v < -127.0f ? -127.0f : (v > 127.0f ? 127.0f : v);
#endif
  return static_cast<int8_t>(v);
}

// One element i of a buffer of dtype d: the stored form of x (int8: its code under the row's
// 1/scale) and the float read back (int8: code·scale).
MQ_STATE_HD void StoreValue(StateDtype d, void* base, int64_t i, float x, float inv_scale) {
  switch (d) {
    case StateDtype::kF32: static_cast<float*>(base)[i] = x; break;
    case StateDtype::kF16: static_cast<uint16_t*>(base)[i] = FloatToHalfBits(x); break;
    case StateDtype::kBF16: static_cast<uint16_t*>(base)[i] = FloatToBf16Bits(x); break;
    case StateDtype::kInt8: static_cast<int8_t*>(base)[i] = Int8Code(x, inv_scale); break;
  }
}
MQ_STATE_HD float LoadValue(StateDtype d, const void* base, int64_t i, float scale) {
  switch (d) {
    case StateDtype::kF16: return HalfBitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case StateDtype::kBF16: return Bf16BitsToFloat(static_cast<const uint16_t*>(base)[i]);
    case StateDtype::kInt8: return static_cast<float>(static_cast<const int8_t*>(base)[i]) * scale;
    default: return static_cast<const float*>(base)[i];
  }
}
// The scale of an int8 row from its values (1 for other dtypes, which ignore it).
MQ_STATE_HD float RowScale(StateDtype d, const float* x, int M) {
  if (d != StateDtype::kInt8) return 1.0f;
  float amax = 0.0f;
  for (int i = 0; i < M; ++i) amax = fmaxf(amax, fabsf(x[i]));
  return Int8Scale(amax);
}

// Stores x[0..M) as the row of elements [off, off + M) of `base` and, for int8, its scale into
// *scale. The fp32 case copies. (Kernels pass a constant M: the loops unroll.)
MQ_STATE_HD void StoreRow(StateDtype d, const float* x, int M, void* base, int64_t off, float* scale) {
  const float s = RowScale(d, x, M), inv = 1.0f / s;
  for (int i = 0; i < M; ++i) StoreValue(d, base, off + i, x[i], inv);
  if (d == StateDtype::kInt8) *scale = s;
}

// Reads the row back as float (scale: the row's int8 scale, ignored otherwise).
MQ_STATE_HD void LoadRow(StateDtype d, const void* base, int64_t off, int M, float scale, float* x) {
  for (int i = 0; i < M; ++i) x[i] = LoadValue(d, base, off + i, scale);
}

// A row of 16 values (the SSM state of one channel) as the 32-bit words of its stored bytes,
// little-endian as a 16-byte vector load sees them (fp32 16 words, fp16/bf16 8, int8 4): the
// decode step kernel moves rows as whole vectors and packs/unpacks them here. Equal to StoreRow /
// LoadRow (state_dtype_test checks it); int8 takes the row's 1/scale and scale.
MQ_STATE_HD void PackWords16(StateDtype d, const float* x, float inv_scale, uint32_t* w) {
  if (d == StateDtype::kF32) {
    for (int i = 0; i < 16; ++i) w[i] = FloatBits(x[i]);
  } else if (d == StateDtype::kInt8) {
    for (int j = 0; j < 4; ++j) {
      uint32_t v = 0;
      for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(static_cast<uint8_t>(Int8Code(x[4 * j + i], inv_scale))) << (8 * i);
      w[j] = v;
    }
  } else {
    for (int j = 0; j < 8; ++j) {
      const uint32_t lo = d == StateDtype::kF16 ? FloatToHalfBits(x[2 * j]) : FloatToBf16Bits(x[2 * j]);
      const uint32_t hi = d == StateDtype::kF16 ? FloatToHalfBits(x[2 * j + 1]) : FloatToBf16Bits(x[2 * j + 1]);
      w[j] = lo | (hi << 16);
    }
  }
}
MQ_STATE_HD void UnpackWords16(StateDtype d, const uint32_t* w, float scale, float* x) {
  if (d == StateDtype::kF32) {
    for (int i = 0; i < 16; ++i) x[i] = BitsFloat(w[i]);
  } else if (d == StateDtype::kInt8) {
    for (int i = 0; i < 16; ++i)
      x[i] = static_cast<float>(static_cast<int8_t>(static_cast<uint8_t>(w[i / 4] >> (8 * (i % 4))))) * scale;
  } else {
    for (int i = 0; i < 16; ++i) {
      const uint16_t b = static_cast<uint16_t>(w[i / 2] >> (16 * (i % 2)));
      x[i] = d == StateDtype::kF16 ? HalfBitsToFloat(b) : Bf16BitsToFloat(b);
    }
  }
}

}  // namespace state

// Host: rounds `rows` rows of M values in place to what a store and a load in dtype d give (the
// CPU reference's state store).
void RoundStateRows(StateDtype d, float* x, int64_t rows, int64_t M);

}  // namespace mq
