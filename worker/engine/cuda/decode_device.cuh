// Device functions shared by the decode kernels: the layer kernels (decode_kernels.cu) and the
// persistent decode kernel (decode_persistent_kernel.cu). One definition of the weight-chunk loads,
// the dot products, the activation quantization, the norm, the conv step and the in-register
// Hadamard levels, so that both paths compute the same expressions (hd_math.h) in the same order.
// CUDA only.
#pragma once

#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

#include "cuda/act_io.cuh"
#include "cuda/hd_math.h"
#include "cuda/int4_math.h"
#include "model/step_math.h"

namespace mq::cuda::decode_dev {

__device__ __forceinline__ int4 LdStream(const uint8_t* p) {
  int4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

__device__ __forceinline__ uint2 LdStream8(const uint8_t* p) {
  uint2 v;
  asm volatile("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// One weight chunk (16 weights) as the GEMV holds it: 16 bytes (INT8, FP16: 8 weights), or 8 packed
// bytes (W4A8).
template <bool kW4>
struct WChunk {
  using T = int4;
  static constexpr int kBytes = 16, kUnroll = hd::kDecodeUnroll;
  static __device__ __forceinline__ T Load(const uint8_t* p) { return LdStream(p); }
  static __device__ __forceinline__ T Zero() { return make_int4(0, 0, 0, 0); }
};
template <>
struct WChunk<true> {
  using T = uint2;
  static constexpr int kBytes = 8, kUnroll = hd::kDecodeInt4Unroll;
  static __device__ __forceinline__ T Load(const uint8_t* p) { return LdStream8(p); }
  static __device__ __forceinline__ T Zero() { return make_uint2(0, 0); }
};

// 16 INT8 products (four dp4a) or 8 FP16 products accumulated in float.
__device__ __forceinline__ void Dot16(int32_t& acc, const int4& w, const int4& x) {
  acc = hd::Dp4a(w.x, x.x, acc);
  acc = hd::Dp4a(w.y, x.y, acc);
  acc = hd::Dp4a(w.z, x.z, acc);
  acc = hd::Dp4a(w.w, x.w, acc);
}
// W4A8: 16 products from 8 packed bytes, unpacked in registers; the INT8 Dot16's dp4a order.
__device__ __forceinline__ void Dot16(int32_t& acc, const uint2& w, const int4& x) {
  acc = hd::Int4Dot16(w.x, w.y, x.x, x.y, x.z, x.w, acc);
}
__device__ __forceinline__ void Dot16(float& acc, const int4& w, const int4& x) {
  const __half2* wh = reinterpret_cast<const __half2*>(&w);
  const __half2* xh = reinterpret_cast<const __half2*>(&x);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 a = __half22float2(wh[i]), b = __half22float2(xh[i]);
    acc = fmaf(a.x, b.x, acc);
    acc = fmaf(a.y, b.y, acc);
  }
}

// Row `act_row` of the GEMV input from n float values v (shared or global), zero-padded to ld
// elements: INT8 with a per-token scale from amax (or the static scale), or half.
template <bool kInt8>
__device__ __forceinline__ void StoreAct(const float* v, int64_t n, int64_t ld, float amax, float static_scale,
                                         uint8_t* act_row, float* scale_out) {
  if constexpr (kInt8) {
    const float s = static_scale > 0.0f ? static_scale : hd::ScaleFromAbsMax(amax);
    const float inv = 1.0f / s;
    int8_t* q = reinterpret_cast<int8_t*>(act_row);
    for (int64_t c = threadIdx.x; c < ld; c += blockDim.x) q[c] = c < n ? hd::QuantizeValue(v[c], inv) : 0;
    if (threadIdx.x == 0) *scale_out = s;
  } else {
    __half* a = reinterpret_cast<__half*>(act_row);
    for (int64_t c = threadIdx.x; c < ld; c += blockDim.x) a[c] = __float2half_rn(c < n ? v[c] : 0.0f);
  }
}

// dst[i] = src[i]·scale[i] (scale optional) for i < n, n a multiple of 4: float4 loads, up to
// kLoadsInFlight of them per thread issued before the first is used. The per-token prologues are
// latency-bound; a plain strided loop waits one L2 round trip per element group.
constexpr int kLoadsInFlight = 8;
// kCg: src was written by other blocks of the running kernel (the persistent decode kernel), so
// it is read through L2 (ld.global.cg), never from a possibly stale L1 line.
template <int kInFlight = kLoadsInFlight, bool kCg = false>
__device__ __forceinline__ void LoadRow(const float* src, const float* scale, int64_t n, float* dst) {
  const int64_t n4 = n / 4;
  const float4* s4 = reinterpret_cast<const float4*>(src);
  const float4* c4 = reinterpret_cast<const float4*>(scale);
  float4* d4 = reinterpret_cast<float4*>(dst);
  for (int64_t base = threadIdx.x; base < n4; base += kInFlight * blockDim.x) {
    float4 v[kInFlight], k[kInFlight];
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * blockDim.x;
      if (i < n4) {
        v[u] = kCg ? __ldcg(s4 + i) : s4[i];
        if (scale != nullptr) k[u] = __ldg(c4 + i);
      }
    }
#pragma unroll
    for (int u = 0; u < kInFlight; ++u) {
      const int64_t i = base + static_cast<int64_t>(u) * blockDim.x;
      if (i < n4) {
        if (scale != nullptr) v[u] = make_float4(v[u].x * k[u].x, v[u].y * k[u].y, v[u].z * k[u].z, v[u].w * k[u].w);
        d4[i] = v[u];
      }
    }
  }
}

// buf ← γ ⊙ RMSNorm(h) of one token, the sum of squares in double like rms_norm_kernel.cu; returns
// the block-wide |max| (INT8) — either way buf is published to the block on return.
template <bool kInt8, bool kCg = false>
__device__ __forceinline__ float NormRow(const float* h, const float* gamma, int64_t d, float eps, float* buf,
                                         double* dscr, float* fscr) {
  LoadRow<kLoadsInFlight, kCg>(h, nullptr, d, buf);
  __syncthreads();
  double ss = 0.0;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) ss += static_cast<double>(buf[c]) * buf[c];
  ss = BlockSum(ss, dscr);
  const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(d) + static_cast<double>(eps)));
  float amax = 0.0f;
  for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
    const float v = gamma[c] * (buf[c] * inv);
    buf[c] = v;
    amax = fmaxf(amax, fabsf(v));
  }
  if constexpr (kInt8) return BlockMax(amax, fscr);
  __syncthreads();
  return 0.0f;
}

template <bool kInt8>
using AccT = std::conditional_t<kInt8, int32_t, float>;

// In-register radix-2 levels of the Walsh–Hadamard transform over the m chunks of P = 32·V values
// (a warp a chunk; lane l holds positions l·V … l·V+V−1): levels h < V inside the lane, h ≥ V
// across lanes by shuffles. Same pairs and the same a+b / a−b per level as hd::ButterflyLow's
// shared-memory levels, so the values are bit-identical, with no block barrier per level.
template <int V>
__device__ __forceinline__ void WarpHadamardChunks(float* x, int m) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, nw = blockDim.x >> 5;
  for (int a = warp; a < m; a += nw) {
    float* chunk = x + a * 32 * V + lane * V;
    float v[V];
#pragma unroll
    for (int i = 0; i < V; ++i) v[i] = chunk[i];
#pragma unroll
    for (int h = 1; h < V; h <<= 1)
#pragma unroll
      for (int i = 0; i < V; ++i)
        if ((i & h) == 0) {
          const float lo = v[i], hi = v[i + h];
          v[i] = lo + hi;
          v[i + h] = lo - hi;
        }
#pragma unroll
    for (int k = 1; k < 32; k <<= 1) {
      const bool low = (lane & k) == 0;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        const float other = __shfl_xor_sync(0xffffffffu, v[i], k);
        v[i] = hd::WarpButterfly(v[i], other, low);
      }
    }
#pragma unroll
    for (int i = 0; i < V; ++i) chunk[i] = v[i];
  }
}

// The same levels through shared memory, one block barrier per level (chunk sizes other than
// 32, 64, 128, 256).
__device__ __forceinline__ void BlockHadamardChunks(float* x, int64_t n, int P, int log2_half) {
  for (int hl = 1; hl < P; hl <<= 1) {
    for (int i = threadIdx.x; i < n / 2; i += blockDim.x) {
      const int lo = hd::ButterflyLow(i, hl, P, log2_half);
      const float x0 = x[lo], x1 = x[lo + hl];
      x[lo] = x0 + x1;
      x[lo + hl] = x0 - x1;
    }
    __syncthreads();
  }
}

// One token's scan step of the channel whose four lanes (lane mod 4 = g) hold states 4g … 4g+3:
// updates h, and returns y = (Σ_n h[n]·C[n] in ascending n + D·u)·gate on the group's lane g = 0
// (the products are gathered there, so the sum runs in the CPU reference's order; other lanes
// return 0). All 32 lanes of the warp must call it.
__device__ __forceinline__ float ScanStepExact4(float* h, const float* a2, float dt, float dtu, const float* b,
                                                const float* c, float D, float u, float gate) {
  float prod[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    h[k] = step_math::ScanState(h[k], a2[k], dt, dtu, b[k]);
    prod[k] = step_math::Mul(h[k], c[k]);
  }
  const int lane = threadIdx.x & 31, base = lane & ~3;
  float all[16];
#pragma unroll
  for (int j = 0; j < 4; ++j)
#pragma unroll
    for (int k = 0; k < 4; ++k) all[j * 4 + k] = __shfl_sync(0xffffffffu, prod[k], base + j);
  return (lane & 3) == 0 ? step_math::ScanOutput(all, 16, D, u, gate) : 0.0f;
}

}  // namespace mq::cuda::decode_dev
