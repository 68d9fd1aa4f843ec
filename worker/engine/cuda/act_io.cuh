// Device-side readers and block reductions shared by the kernels (CUDA only).
#pragma once

#include <cooperative_groups.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "cuda/hd_math.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {

// Reads element (t, c) of an activation view of kind K as float (bias included).
template <ActKind K>
__device__ __forceinline__ float LoadAct(const ActView& v, int64_t t, int64_t c) {
  float x;
  if constexpr (K == ActKind::kF16) {
    x = __half2float(static_cast<const __half*>(v.data)[t * v.ld + c]);
  } else if constexpr (K == ActKind::kF32) {
    x = static_cast<const float*>(v.data)[t * v.ld + c];
  } else if constexpr (K == ActKind::kInt32Acc) {
    x = hd::Dequantize(static_cast<const int32_t*>(v.data)[t * v.ld + c], v.row_scale[t], v.col_scale[c]);
  } else {
    return 0.0f;
  }
  if (v.bias != nullptr) x += v.bias[c];
  return x;
}

__device__ __forceinline__ float WarpMax(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ double WarpSum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Block-wide reductions (blockDim.x a multiple of 32, at most 1024). `scratch` holds 32 values.
__device__ __forceinline__ float BlockMax(float v, float* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = WarpMax(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.0f;
  return WarpMax(v);
}
__device__ __forceinline__ double BlockSum(double v, double* scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = WarpSum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  v = lane < nw ? scratch[lane] : 0.0;
  return WarpSum(v);
}

// Quantizes columns [lo, hi) of row t into q.q[t, :] from `vals` (column lo first, in shared
// memory), zero-filling [hi, end) (the row's padding up to q.ld, for whoever writes the row's
// end); amax is the whole row's absolute maximum (ignored with a static scale), the scale written
// with `write_scale`. A row split over a cluster's blocks calls it once a slice.
__device__ __forceinline__ void QuantizeRowSlice(const float* vals, int64_t lo, int64_t hi, int64_t end, float amax,
                                                 const QuantOut& q, int64_t t, bool write_scale) {
  const float s = q.static_scale > 0.0f ? q.static_scale : hd::ScaleFromAbsMax(amax);
  const float inv = 1.0f / s;
  int8_t* out = q.q + t * q.ld;
  for (int64_t c = lo + threadIdx.x; c < end; c += blockDim.x) out[c] = c < hi ? hd::QuantizeValue(vals[c - lo], inv) : 0;
  if (write_scale && threadIdx.x == 0) q.scale[t] = s;
}

// Quantizes row t of `vals` (cols values in shared memory) into q.q[t, :] with zero padding up
// to q.ld; amax is the row's absolute maximum (ignored with a static scale).
__device__ __forceinline__ void QuantizeRow(const float* vals, int64_t cols, float amax, const QuantOut& q,
                                            int64_t t) {
  QuantizeRowSlice(vals, 0, cols, q.ld, amax, q, t, true);
}

// The largest of the block maxima of a thread-block cluster's `ranks` blocks: each block pushes
// its own (BlockMax's result) into every rank's `slots` (shared, [ranks]), then one cluster
// barrier, after which no block touches another's shared memory (none waits on exit). Every
// thread of every block calls it.
__device__ __forceinline__ float ClusterMax(float block_max, float* slots, int rank, int ranks) {
  cooperative_groups::cluster_group cluster = cooperative_groups::this_cluster();
  if (threadIdx.x == 0)
    for (int r = 0; r < ranks; ++r) cluster.map_shared_rank(slots, r)[rank] = block_max;
  cluster.sync();
  float m = block_max;
  for (int r = 0; r < ranks; ++r) m = fmaxf(m, slots[r]);
  return m;
}

// Threads for a one-block-per-token kernel over `cols` features: few tokens (decode) get wide
// blocks so that a single block's latency stays short; many tokens (prefill) get 256.
inline int RowKernelThreads(int64_t tokens, int64_t cols) {
  if (tokens > 64) return 256;
  int64_t t = (cols / 4 + 31) / 32 * 32;
  return static_cast<int>(t < 128 ? 128 : t > 1024 ? 1024 : t);
}

}  // namespace mq::cuda
