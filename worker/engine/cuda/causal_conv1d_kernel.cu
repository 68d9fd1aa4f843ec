// Depthwise causal conv1d + SiLU over each sequence, continuing from the conv state (the last
// K−1 inputs, oldest first), for prefill (L > 1) and the one-step decode update (L = 1).
//
// Prefill: a block takes a tile of kTile consecutive positions of one sequence and a slice of
// channels, four channels per thread (one 16-byte INT32 / 8-byte half load per position). The
// tile's inputs plus the K−1 before it (from the conv state before position 0) are loaded once
// into registers, dequantized once, and every output reads its window from there. The INT8 path
// quantizes u per token, which needs the token's absolute maximum over all E channels: a
// thread-block cluster spans the channels of one tile (its blocks exchange their per-token
// maxima through distributed shared memory) and u stays in registers until the scale is known.
// The state update of a prefill is a second kernel (the tile that reads the old state is not the
// one that writes the new state).
// Decode: one block per token; the thread of (token, channel) shifts the state in place.
// The state is stored in the model's state dtype (model/state_dtype.h): rows of K−1 values a
// channel, read and written whole (state::LoadRow / StoreRow, int8 with the row's scale).
#include <cooperative_groups.h>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"
#include "cuda/l2_prefetch.cuh"
#include "cuda/launch_attrs.h"
#include "cuda/row_cluster_plan.h"

namespace mq::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kMaxThreads = 1024;
constexpr int kMaxK = 8;
constexpr int kVec = 4;             // channels per thread in the prefill kernel
constexpr int kMaxCluster = 8;      // portable cluster size
constexpr int kQuantThreads = 256;  // prefill INT8: threads a block aims at (the cluster grows first) …
constexpr int kQuantMaxThreads = 512;  // … and may reach with a full cluster
constexpr int kF16Threads = 128;

// Four consecutive channels c … c+3 of token row t, dequantized (LoadAct's arithmetic).
template <ActKind kIn>
__device__ __forceinline__ float4 LoadAct4(const ActView& v, int64_t t, int64_t c) {
  float4 x;
  if constexpr (kIn == ActKind::kF16) {
    const uint2 raw = *reinterpret_cast<const uint2*>(static_cast<const __half*>(v.data) + t * v.ld + c);
    const float2 lo = __half22float2(*reinterpret_cast<const __half2*>(&raw.x));
    const float2 hi = __half22float2(*reinterpret_cast<const __half2*>(&raw.y));
    x = make_float4(lo.x, lo.y, hi.x, hi.y);
  } else if constexpr (kIn == ActKind::kF32) {
    x = *reinterpret_cast<const float4*>(static_cast<const float*>(v.data) + t * v.ld + c);
  } else {
    const int4 acc = *reinterpret_cast<const int4*>(static_cast<const int32_t*>(v.data) + t * v.ld + c);
    const float sx = v.row_scale[t];
    const float4 sw = *reinterpret_cast<const float4*>(v.col_scale + c);
    x = make_float4(hd::Dequantize(acc.x, sx, sw.x), hd::Dequantize(acc.y, sx, sw.y), hd::Dequantize(acc.z, sx, sw.z),
                    hd::Dequantize(acc.w, sx, sw.w));
  }
  if (v.bias != nullptr) {
    const float4 bias = *reinterpret_cast<const float4*>(v.bias + c);
    x.x += bias.x, x.y += bias.y, x.z += bias.z, x.w += bias.w;
  }
  return x;
}

__device__ __forceinline__ float& At(float4& v, int i) { return reinterpret_cast<float*>(&v)[i]; }
__device__ __forceinline__ float At(const float4& v, int i) { return reinterpret_cast<const float*>(&v)[i]; }

// blockIdx.x: channel slice (the cluster's rank in the INT8 path); blockIdx.y: (sequence, tile).
template <ActKind kIn, bool kQuant, int kK>
__global__ void __launch_bounds__(kQuant ? kQuantMaxThreads : kF16Threads) CausalConvTileKernel(CausalConvParams p) {
  constexpr int kTile = kQuant ? 8 : 16;  // INT8: u of the whole tile waits in registers for its scale
  constexpr int kS = kK - 1;
  constexpr int kRows = kTile + kS;
  const int64_t tiles = (p.seqlen + kTile - 1) / kTile;
  const int64_t b = blockIdx.y / tiles, l0 = (blockIdx.y % tiles) * kTile;
  const int nt = static_cast<int>(p.seqlen - l0 < kTile ? p.seqlen - l0 : kTile);
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) * kVec;
  const bool active = c < p.E;
  const int64_t row0 = b * p.seqlen + l0;  // token row of the tile's first position

  // x[r]: input at position l0 − kS + r (r < kS: before the tile); x[r] becomes u of position
  // l0 + r once the window that starts there is done.
  float4 x[kRows];
  if (active) {
    float w[kVec][kK];
#pragma unroll
    for (int v = 0; v < kVec; ++v) {
#pragma unroll
      for (int k = 0; k < kK; ++k) w[v][k] = p.weight[(c + v) * kK + k];
    }
    const float4 bias = *reinterpret_cast<const float4*>(p.bias + c);
    // The first tile starts from the state: rows of channels c … c+3, as float.
    float st[kVec][kS];
    if (l0 < kS) {
      const int64_t slot = p.slot_ids[b];
#pragma unroll
      for (int v = 0; v < kVec; ++v) {
        const float scale = p.state_dtype == StateDtype::kInt8 ? p.conv_scale[slot * p.scale_slot_stride + c + v] : 1.0f;
        state::LoadRow(p.state_dtype, p.conv_state, slot * p.slot_stride + (c + v) * kS, kS, scale, st[v]);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t pos = l0 - kS + r;
      if (r < kS + nt) {
        if (pos >= 0) {
          x[r] = LoadAct4<kIn>(p.u0, row0 - kS + r, c);
        } else {
#pragma unroll
          for (int v = 0; v < kVec; ++v) At(x[r], v) = st[v][kS + pos];
        }
      }
    }
#pragma unroll
    for (int tt = 0; tt < kTile; ++tt) {
      if (tt < nt) {
#pragma unroll
        for (int v = 0; v < kVec; ++v) {
          float acc = At(bias, v);
#pragma unroll
          for (int k = 0; k < kK; ++k) acc += w[v][k] * At(x[tt + k], v);
          At(x[tt], v) = hd::Silu(acc);
        }
        if constexpr (kQuant) {
          *reinterpret_cast<float4*>(p.out_f32 + (row0 + tt) * p.E + c) = x[tt];
        } else {
          __half2 h[2] = {__floats2half2_rn(x[tt].x, x[tt].y), __floats2half2_rn(x[tt].z, x[tt].w)};
          *reinterpret_cast<uint2*>(p.out_f16 + (row0 + tt) * p.E + c) = *reinterpret_cast<uint2*>(h);
        }
      }
    }
  }
  if constexpr (kQuant) {
    if (p.quant.q == nullptr) return;  // uniform over the grid: no cluster barrier is skipped by part of it
    __shared__ float s_warp[kTile][32];
    __shared__ float s_amax[kTile];       // this block's per-token maxima, read by the whole cluster
    __shared__ float s_scale[kTile][2];   // scale, 1/scale
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
    for (int tt = 0; tt < kTile; ++tt) {
      float m = 0.0f;
      if (active && tt < nt) m = fmaxf(fmaxf(fabsf(x[tt].x), fabsf(x[tt].y)), fmaxf(fabsf(x[tt].z), fabsf(x[tt].w)));
      m = WarpMax(m);
      if (lane == 0) s_warp[tt][warp] = m;
    }
    __syncthreads();
    if (threadIdx.x < kTile) {
      float m = 0.0f;
      for (int i = 0; i < nw; ++i) m = fmaxf(m, s_warp[threadIdx.x][i]);
      s_amax[threadIdx.x] = m;
    }
    cg::cluster_group cluster = cg::this_cluster();
    cluster.sync();
    if (threadIdx.x < nt) {
      float m = 0.0f;
      for (unsigned r = 0; r < cluster.num_blocks(); ++r) m = fmaxf(m, cluster.map_shared_rank(s_amax, r)[threadIdx.x]);
      const float s = p.quant.static_scale > 0.0f ? p.quant.static_scale : hd::ScaleFromAbsMax(m);
      s_scale[threadIdx.x][0] = s;
      s_scale[threadIdx.x][1] = 1.0f / s;
      if (cluster.block_rank() == 0) p.quant.scale[row0 + threadIdx.x] = s;
    }
    __syncthreads();
    if (c < p.quant.ld) {  // channels E … ld−1 are the zero padding
#pragma unroll
      for (int tt = 0; tt < kTile; ++tt) {
        if (tt < nt) {
          char4 q = make_char4(0, 0, 0, 0);
          if (active) {
            const float inv = s_scale[tt][1];
            q = make_char4(hd::QuantizeValue(x[tt].x, inv), hd::QuantizeValue(x[tt].y, inv),
                           hd::QuantizeValue(x[tt].z, inv), hd::QuantizeValue(x[tt].w, inv));
          }
          *reinterpret_cast<char4*>(p.quant.q + (row0 + tt) * p.quant.ld + c) = q;
        }
      }
    }
    cluster.sync();  // s_amax must outlive the other blocks' reads
  }
}

// Decode (L = 1): blockIdx.y is batch row t, blockIdx.x its rank among `ranks` blocks that split
// the channels (hd::RowClusterSlice; a thread-block cluster when the INT8 output needs the token's
// |max| over all of them); the thread of (token, channel) shifts the state in place.
template <ActKind kIn, bool kQuant>
__global__ void __launch_bounds__(kMaxThreads) CausalConvStepKernel(CausalConvParams p, int ranks) {
  extern __shared__ float urow[];  // [slice] (INT8 path)
  __shared__ float fscratch[32];
  __shared__ float s_amax[hd::kRowClusterMaxRanks];  // every rank's block maximum, pushed by its owner
  // One block a token: tokens on x (no 65,535 limit); a cluster a token: ranks on x.
  const int64_t t = ranks == 1 ? blockIdx.x : blockIdx.y;
  const int rank = ranks == 1 ? 0 : static_cast<int>(blockIdx.x);
  const bool cluster_quant = kQuant && ranks > 1 && p.quant.q != nullptr;  // uniform over the grid
  // Distributed shared memory may be touched only once every block of the cluster runs: arrive
  // now, wait just before the first push (the conv below hides the wait).
  if (cluster_quant) asm volatile("barrier.cluster.arrive.relaxed.aligned;" ::: "memory");
  PrefetchAhead(p.l2_ahead);  // the previous kernel is complete: DRAM is free for the next weights
  int64_t lo, hi;
  hd::RowClusterSlice(p.E, ranks, rank, &lo, &hi);
  const int64_t S = p.K - 1;
  const int32_t slot = p.slot_ids[t];
  float amax = 0.0f;
  const bool int8_state = p.state_dtype == StateDtype::kInt8;
  for (int64_t c = lo + threadIdx.x; c < hi; c += blockDim.x) {
    const int64_t off = slot * p.slot_stride + c * S;
    float* scale = int8_state ? p.conv_scale + slot * p.scale_slot_stride + c : nullptr;
    const float* w = p.weight + c * p.K;
    float acc = p.bias[c];
    const float sc = int8_state ? *scale : 1.0f;
    float window[kMaxK];
#pragma unroll
    for (int k = 0; k < kMaxK; ++k) {
      if (k < p.K) {
        window[k] = k < S ? state::LoadValue(p.state_dtype, p.conv_state, off + k, sc) : LoadAct<kIn>(p.u0, t, c);
        acc += w[k] * window[k];
      }
    }
    const float u = hd::Silu(acc);
    // The new row window[1 … S] (state::StoreRow's rule, unrolled over the bound kMaxK − 1).
    // (row_max, not amax: amax is the token's |u| maximum for the INT8 output below.)
    float row_max = 0.0f;
#pragma unroll
    for (int s = 1; s < kMaxK; ++s)
      if (s <= S) row_max = fmaxf(row_max, fabsf(window[s]));
    const float ns = int8_state ? state::Int8Scale(row_max) : 1.0f, inv = 1.0f / ns;
#pragma unroll
    for (int s = 0; s < kMaxK - 1; ++s)
      if (s < S) state::StoreValue(p.state_dtype, p.conv_state, off + s, window[s + 1], inv);
    if (int8_state) *scale = ns;
    if constexpr (kQuant) {
      p.out_f32[t * p.E + c] = u;
      urow[c - lo] = u;
      amax = fmaxf(amax, fabsf(u));
    } else {
      p.out_f16[t * p.E + c] = __float2half_rn(u);
    }
  }
  if constexpr (kQuant) {
    if (p.quant.q == nullptr) return;  // uniform over the grid: no cluster barrier is skipped by part of it
    amax = BlockMax(amax, fscratch);   // its barriers also publish urow
    if (cluster_quant) {
      asm volatile("barrier.cluster.wait.aligned;" ::: "memory");
      amax = ClusterMax(amax, s_amax, rank, ranks);
    }
    // The last rank also zero-fills the padding; rank 0 writes the scale.
    QuantizeRowSlice(urow, lo, hi, rank == ranks - 1 ? p.quant.ld : hi, amax, p.quant, t, rank == 0);
  }
}

// Prefill: the new state is the last K−1 entries of [old state, inputs]. One thread per (b, c)
// reads the old row whole, then stores the new one.
template <ActKind kIn>
__global__ void ConvStateUpdateKernel(CausalConvParams p) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= p.batch * p.E) return;
  const int64_t b = i / p.E, c = i % p.E;
  const int64_t S = p.K - 1;
  const int64_t slot = p.slot_ids[b], off = slot * p.slot_stride + c * S;
  float* scale = p.state_dtype == StateDtype::kInt8 ? p.conv_scale + slot * p.scale_slot_stride + c : nullptr;
  float old[kMaxK - 1], st[kMaxK - 1];
  state::LoadRow(p.state_dtype, p.conv_state, off, static_cast<int>(S), scale != nullptr ? *scale : 1.0f, old);
  for (int64_t s = 0; s < S; ++s) {
    const int64_t idx = p.seqlen + s;
    st[s] = idx < S ? old[idx] : LoadAct<kIn>(p.u0, b * p.seqlen + (idx - S), c);
  }
  state::StoreRow(p.state_dtype, st, static_cast<int>(S), p.conv_state, off, scale);
}

template <ActKind kIn, bool kQuant, int kK>
Status LaunchTiles(const CausalConvParams& p, cudaStream_t stream) {
  constexpr int kTile = kQuant ? 8 : 16;
  const int64_t tiles = p.batch * ((p.seqlen + kTile - 1) / kTile);
  if (tiles > 65535) return InvalidArgumentError("CausalConv: too many tokens for one launch");
  const int64_t groups = (kQuant && p.quant.q != nullptr ? p.quant.ld : p.E) / kVec;  // with the INT8 padding
  const auto kernel = CausalConvTileKernel<kIn, kQuant, kK>;
  if constexpr (kQuant) {
    // The smallest cluster whose blocks stay within kQuantThreads threads.
    int cluster = 1;
    while (cluster < kMaxCluster && (groups + cluster - 1) / cluster > kQuantThreads) cluster *= 2;
    const int64_t threads = hd::RoundUp((groups + cluster - 1) / cluster, 32);
    if (threads > kQuantMaxThreads) return InvalidArgumentError("CausalConv: d_inner too large");
    MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(kernel, dim3(static_cast<unsigned>(cluster), static_cast<unsigned>(tiles)),
                                           dim3(static_cast<unsigned>(threads)), 0, static_cast<unsigned>(cluster),
                                           /*pdl=*/false, stream, p));
  } else {
    MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(
        kernel, dim3(static_cast<unsigned>((groups + kF16Threads - 1) / kF16Threads), static_cast<unsigned>(tiles)),
        dim3(kF16Threads), 0, /*cluster=*/0, /*pdl=*/false, stream, p));
  }
  MQ_CUDA_CHECK_LAUNCH("CausalConvTileKernel");
  return OkStatus();
}

template <ActKind kIn, bool kQuant>
Status Launch(const CausalConvParams& p, cudaStream_t stream) {
  const int64_t T = p.batch * p.seqlen;
  if (p.seqlen == 1) {
    // Few tokens: split each token's channels over `ranks` blocks (a cluster for the INT8 scale).
    const int ranks = RowClustersEnabled() ? hd::SliceClusterRanks(T, p.E, DeviceSmCount()) : 1;
    const int64_t slice = hd::RowClusterMaxSlice(p.E, ranks);  // the ranks' slices differ by ≤ 4
    const size_t smem = kQuant ? static_cast<size_t>(slice) * sizeof(float) : 0;
    if (smem > 48 * 1024) return InvalidArgumentError("CausalConv: d_inner too large for one block");
    if (ranks > 1 && T > 65535) return InvalidArgumentError("CausalConv: too many tokens for one launch");
    const dim3 grid = ranks == 1 ? dim3(static_cast<unsigned>(T)) : dim3(static_cast<unsigned>(ranks), static_cast<unsigned>(T));
    const unsigned cluster = kQuant && ranks > 1 ? static_cast<unsigned>(ranks) : 0;
    MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(CausalConvStepKernel<kIn, kQuant>, grid,
                                           dim3(static_cast<unsigned>(RowKernelThreads(T, slice))), smem, cluster,
                                           /*pdl=*/false, stream, p, ranks));
    MQ_CUDA_CHECK_LAUNCH("CausalConvStepKernel");
    return OkStatus();
  }
  if (kQuant && p.quant.q != nullptr && (p.quant.ld % kVec != 0 || p.quant.ld < p.E))
    return InvalidArgumentError("CausalConv: INT8 rows must be a multiple of 4 wide");
  Status st;
  switch (p.K) {
    case 2: st = LaunchTiles<kIn, kQuant, 2>(p, stream); break;
    case 3: st = LaunchTiles<kIn, kQuant, 3>(p, stream); break;
    case 4: st = LaunchTiles<kIn, kQuant, 4>(p, stream); break;
    case 5: st = LaunchTiles<kIn, kQuant, 5>(p, stream); break;
    case 6: st = LaunchTiles<kIn, kQuant, 6>(p, stream); break;
    case 7: st = LaunchTiles<kIn, kQuant, 7>(p, stream); break;
    default: st = LaunchTiles<kIn, kQuant, 8>(p, stream); break;
  }
  MQ_RETURN_IF_ERROR(st);
  const int64_t n = p.batch * p.E;
  ConvStateUpdateKernel<kIn><<<static_cast<unsigned>((n + 255) / 256), 256, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("ConvStateUpdateKernel");
  return OkStatus();
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

Status LaunchCausalConv(const CausalConvParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.seqlen <= 0) return OkStatus();
  if (p.K < 2 || p.K > kMaxK) return InvalidArgumentError("CausalConv: conv kernel size must be in [2, 8]");
  // Prefill reads four channels at a time: 16-byte INT32 / 8-byte half groups, float4 parameters.
  if (p.seqlen > 1 && (p.E % kVec != 0 || !Aligned16(p.u0.data) || p.u0.ld % kVec != 0 || !Aligned16(p.bias) ||
                       (p.u0.bias != nullptr && !Aligned16(p.u0.bias)) ||
                       (p.u0.col_scale != nullptr && !Aligned16(p.u0.col_scale))))
    return InvalidArgumentError("CausalConv: d_inner must be a multiple of 4 and rows 16-byte aligned");
  if (p.u0.kind == ActKind::kF16 && p.out_f16 != nullptr) return Launch<ActKind::kF16, false>(p, stream);
  if (p.u0.kind == ActKind::kInt32Acc && p.out_f32 != nullptr) return Launch<ActKind::kInt32Acc, true>(p, stream);
  // Scope `full`: the fake-quantized conv input, float.
  if (p.u0.kind == ActKind::kF32 && p.out_f32 != nullptr) return Launch<ActKind::kF32, true>(p, stream);
  return InvalidArgumentError("CausalConv: supported are half in/half out and INT8 accumulators or float in/float+INT8 out");
}

}  // namespace mq::cuda
