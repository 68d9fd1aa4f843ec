// The Mamba-1 selective scan with its gate, for prefill (any L) and one decode step (L = 1):
//   Δ = softplus(δW_dtᵀ + b_dt),  h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,
//   y_t = (h_t · C_t + D ⊙ u_t) ⊙ gate(z_t)
// Parallel over batch × channels (× state): a channel's 16 state entries sit in the registers of
// kTpc = 16/kNpt neighbouring lanes, which combine h·C by xor-shuffles. Prefill uses 4 states a
// lane (2 for fewer than 8192 channels in all): measured on 2.8b 8×2048 (H100), 4 beats 8 and 16
// (scan 54 ms vs 64–68), the extra warps hide the recurrence's latency better than one thread a
// channel saves instructions. A single decode step goes to selective_scan_step_kernel.cu.
// Each block streams kChunk time steps at a time through shared memory, double-buffered: the raw
// rows of the next chunk (Δ, z, u as stored, B|C, the INT8 rows' scales) are copied with cp.async
// while the current one is scanned. Per chunk, the lanes of a channel first turn their raw values
// into Δ (bias, softplus) and the gate (dequantization, bias, SiLU) — each (step, channel) once,
// split over the channel's lanes — then step through the recurrence, then write y.
// The state is read at the start and stored at the end in the model's state dtype.
#include <cuda_pipeline.h>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kN = 16;

// Element types of a path: Δ and z as stored (half, or INT32 accumulators), u and y.
template <ActKind kIn> struct ScanTypes;
template <> struct ScanTypes<ActKind::kF16> {
  using Raw = __half;
  using U = __half;
  using Y = __half;
};
template <> struct ScanTypes<ActKind::kInt32Acc> {
  using Raw = int32_t;
  using U = float;
  using Y = float;
};

template <int kNpt> struct ScanShape {
  static constexpr int kTpc = kN / kNpt;              // lanes per channel
  static constexpr int kThreads = kNpt == 16 ? 64 : 128;
  static constexpr int kChannels = kThreads / kTpc;   // channels per block
  static constexpr int kChunk = kNpt == 16 ? 16 : 32; // time steps per stage (static shared memory < 48 KB)
};

template <ActKind kIn, int kNpt> struct ScanSmem {
  using T = ScanTypes<kIn>;
  using S = ScanShape<kNpt>;
  // Raw rows, double-buffered (cp.async targets, 16-byte aligned rows).
  alignas(16) typename T::Raw delta[2][S::kChunk][S::kChannels];
  alignas(16) typename T::Raw z[2][S::kChunk][S::kChannels];
  alignas(16) typename T::U u[2][S::kChunk][S::kChannels];
  alignas(16) float bc[2][S::kChunk][2 * kN];
  float row_scale[2][2][S::kChunk];  // INT8 path: s_x of the chunk's Δ rows [0] and z rows [1]
  // The current chunk: Δ and the gate ready for the recurrence, and its gated output.
  float dt[S::kChunk][S::kChannels];
  float gate[S::kChunk][S::kChannels];
  float y[S::kChunk][S::kChannels];
};

__device__ __forceinline__ float ToF(float v) { return v; }
__device__ __forceinline__ float ToF(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T FromF(float v);
template <> __device__ __forceinline__ float FromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __half FromF<__half>(float v) { return __float2half_rn(v); }

// kObserve (calibration, FP16 path): every lane also keeps max|h| of its states over the steps and
// folds it into p.state_absmax at the end.
template <ActKind kIn, int kNpt, bool kObserve>
__global__ void __launch_bounds__(ScanShape<kNpt>::kThreads) SelectiveScanKernel(SelectiveScanParams p) {
  using Raw = typename ScanTypes<kIn>::Raw;
  using UT = typename ScanTypes<kIn>::U;
  using YT = typename ScanTypes<kIn>::Y;
  using S = ScanShape<kNpt>;
  constexpr int kTpc = S::kTpc, kChannels = S::kChannels, kChunk = S::kChunk, kThreads = S::kThreads;
  constexpr int kRawVec = 16 / sizeof(Raw), kUVec = 16 / sizeof(UT);  // elements per 16-byte copy
  __shared__ ScanSmem<kIn, kNpt> s;

  const UT* __restrict__ u = static_cast<const UT*>(p.u);
  YT* __restrict__ y;
  if constexpr (kIn == ActKind::kF16) {
    y = p.y_f16;
  } else {
    y = p.y_f32;
  }
  const Raw* __restrict__ delta_raw = static_cast<const Raw*>(p.delta.data);
  const Raw* __restrict__ z_raw = static_cast<const Raw*>(p.z.data);
  const int64_t b = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChannels;
  const int cl = threadIdx.x / kTpc, g = threadIdx.x % kTpc;
  const int64_t c = c0 + cl;
  const bool active = c < p.E;
  const int64_t cc = active ? c : 0;  // clamped channel for per-channel loads
  const int64_t row0 = b * p.seqlen;
  const int32_t slot = p.slot_ids[b];
  // This lane's kNpt states in the model's state dtype (model/state_dtype.h); int8 rows (a channel)
  // share one scale, which the channel's lanes agree on by a max over their shuffles at the end.
  const int64_t hoff = slot * p.slot_stride + cc * kN + g * kNpt;
  const bool int8_state = p.state_dtype == StateDtype::kInt8;
  float* hscale = int8_state ? p.ssm_scale + slot * p.scale_slot_stride + cc : nullptr;

  // Copies the raw rows of steps [t0, t0 + steps) into buffer buf (one cp.async group).
  auto stage = [&](int64_t t0, int buf) {
    const int steps = static_cast<int>(p.seqlen - t0 < kChunk ? p.seqlen - t0 : kChunk);
    constexpr int kRawPerRow = kChannels / kRawVec, kUPerRow = kChannels / kUVec;
    for (int i = threadIdx.x; i < steps * kRawPerRow; i += kThreads) {
      const int tt = i / kRawPerRow, v = (i % kRawPerRow) * kRawVec;
      const int64_t row = row0 + t0 + tt;
      if (c0 + v < p.E) {
        __pipeline_memcpy_async(&s.delta[buf][tt][v], delta_raw + row * p.delta.ld + c0 + v, 16);
        __pipeline_memcpy_async(&s.z[buf][tt][v], z_raw + row * p.z.ld + c0 + v, 16);
      }
    }
    for (int i = threadIdx.x; i < steps * kUPerRow; i += kThreads) {
      const int tt = i / kUPerRow, v = (i % kUPerRow) * kUVec;
      if (c0 + v < p.E) __pipeline_memcpy_async(&s.u[buf][tt][v], u + (row0 + t0 + tt) * p.E + c0 + v, 16);
    }
    for (int i = threadIdx.x; i < steps * (2 * kN / 4); i += kThreads) {
      const int tt = i / (2 * kN / 4), v = (i % (2 * kN / 4)) * 4;
      __pipeline_memcpy_async(&s.bc[buf][tt][v], p.dbc + (row0 + t0 + tt) * p.dbc_ld + p.R + v, 16);
    }
    if constexpr (kIn == ActKind::kInt32Acc) {
      for (int i = threadIdx.x; i < 2 * steps; i += kThreads) {
        const int which = i / steps, tt = i % steps;
        const float* rs = which == 0 ? p.delta.row_scale : p.z.row_scale;
        __pipeline_memcpy_async(&s.row_scale[buf][which][tt], rs + row0 + t0 + tt, 4);
      }
    }
    __pipeline_commit();
  };
  stage(0, 0);

  float h[kNpt], a2[kNpt], hmax[kNpt];
  float dcoef = 0.0f;
#pragma unroll
  for (int k = 0; k < kNpt; ++k) hmax[k] = 0.0f;
  if (active) {
    state::LoadRow(p.state_dtype, p.ssm_state, hoff, kNpt, int8_state ? *hscale : 1.0f, h);
#pragma unroll
    for (int k = 0; k < kNpt; ++k) a2[k] = p.A2[c * kN + g * kNpt + k];
    dcoef = p.D[c];
  } else {
#pragma unroll
    for (int k = 0; k < kNpt; ++k) h[k] = a2[k] = 0.0f;
  }
  // Per-channel constants of the Δ/gate transform (LoadAct's arithmetic: dequantize, + bias).
  const bool delta_bias = p.delta.bias != nullptr, z_bias = p.z.bias != nullptr, smooth = p.gate_scale != nullptr;
  const float db = delta_bias ? p.delta.bias[cc] : 0.0f, zb = z_bias ? p.z.bias[cc] : 0.0f;
  const float gs = smooth ? p.gate_scale[cc] : 0.0f;
  float dsw = 0.0f, zsw = 0.0f;
  if constexpr (kIn == ActKind::kInt32Acc) dsw = p.delta.col_scale[cc], zsw = p.z.col_scale[cc];

  int buf = 0;
  for (int64_t t0 = 0; t0 < p.seqlen; t0 += kChunk, buf ^= 1) {
    const int steps = static_cast<int>(p.seqlen - t0 < kChunk ? p.seqlen - t0 : kChunk);
    __pipeline_wait_prior(0);
    // Publishes this chunk's copies; every thread is past the previous chunk, so the other buffer
    // (read by its transform) may now be refilled.
    __syncthreads();
    if (t0 + kChunk < p.seqlen) stage(t0 + kChunk, buf ^ 1);
    if (active) {
      for (int tt = g; tt < steps; tt += kTpc) {
        float dr, zr;
        if constexpr (kIn == ActKind::kInt32Acc) {
          dr = hd::Dequantize(s.delta[buf][tt][cl], s.row_scale[buf][0][tt], dsw);
          zr = hd::Dequantize(s.z[buf][tt][cl], s.row_scale[buf][1][tt], zsw);
        } else {
          dr = __half2float(s.delta[buf][tt][cl]);
          zr = __half2float(s.z[buf][tt][cl]);
        }
        if (delta_bias) dr += db;
        if (z_bias) zr += zb;
        s.dt[tt][cl] = hd::Softplus(dr);
        s.gate[tt][cl] = smooth ? hd::SmoothSilu(zr, gs) : hd::Silu(zr);
      }
    }
    __syncwarp();  // a channel's lanes share a warp
    // No branch in the recurrence (y goes to shared memory), so unrolled steps can overlap.
#pragma unroll 4
    for (int tt = 0; tt < steps; ++tt) {
      const float dt = s.dt[tt][cl];
      const float uu = ToF(s.u[buf][tt][cl]);
      float bv[kNpt], cv[kNpt];
#pragma unroll
      for (int k = 0; k < kNpt; ++k) {
        bv[k] = s.bc[buf][tt][g * kNpt + k];
        cv[k] = s.bc[buf][tt][kN + g * kNpt + k];
      }
      float part = hd::ScanStep<kNpt>(h, a2, dt, dt * uu, bv, cv);
      if constexpr (kObserve) {
#pragma unroll
        for (int k = 0; k < kNpt; ++k) hmax[k] = fmaxf(hmax[k], fabsf(h[k]));
      }
#pragma unroll
      for (int o = kTpc / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
      // After the xor-butterfly every lane of the channel holds the same sum (the adds commute),
      // so all of them store the same y: no predicate in the loop.
      s.y[tt][cl] = (part + dcoef * uu) * s.gate[tt][cl];
    }
    __syncwarp();
    if (active) {
      for (int tt = g; tt < steps; tt += kTpc) y[(row0 + t0 + tt) * p.E + c] = FromF<YT>(s.y[tt][cl]);
    }
    __syncwarp();  // the next chunk's transform overwrites dt/gate/y
  }
  float amax = 0.0f;  // int8 state: max |h| over the channel's 16 states (inactive lanes hold 0)
  if (int8_state) {   // uniform over the grid: every lane takes part in the shuffles
#pragma unroll
    for (int k = 0; k < kNpt; ++k) amax = fmaxf(amax, fabsf(h[k]));
#pragma unroll
    for (int o = kTpc / 2; o > 0; o >>= 1) amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, o));
  }
  if (active) {
    if (int8_state) {  // state::StoreRow's rule, with the row's maximum gathered over the lanes
      const float sc = state::Int8Scale(amax), inv = 1.0f / sc;
      int8_t* q = static_cast<int8_t*>(p.ssm_state) + hoff;
#pragma unroll
      for (int k = 0; k < kNpt; ++k) q[k] = state::Int8Code(h[k], inv);
      if (g == 0) *hscale = sc;
    } else {
      state::StoreRow(p.state_dtype, h, kNpt, p.ssm_state, hoff, nullptr);
    }
    if constexpr (kObserve) {
      // |h| ≥ 0: the float bits order like the values, so an integer atomicMax works.
#pragma unroll
      for (int k = 0; k < kNpt; ++k)
        atomicMax(reinterpret_cast<int*>(p.state_absmax + g * kNpt + k), __float_as_int(hmax[k]));
    }
  }
}

template <ActKind kIn, int kNpt, bool kObserve = false>
Status Launch(const SelectiveScanParams& p, cudaStream_t stream) {
  using S = ScanShape<kNpt>;
  const dim3 grid(static_cast<unsigned>((p.E + S::kChannels - 1) / S::kChannels), static_cast<unsigned>(p.batch));
  SelectiveScanKernel<kIn, kNpt, kObserve><<<grid, S::kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("SelectiveScanKernel");
  return OkStatus();
}

// States per lane (see the top of the file).
template <ActKind kIn>
Status LaunchPath(const SelectiveScanParams& p, cudaStream_t stream) {
  const int64_t channels = p.batch * p.E;
  if (p.state_absmax != nullptr) {  // calibration of a float model, prefill only
    if constexpr (kIn == ActKind::kF16) {
      if (p.seqlen > 1)
        return channels >= 8192 ? Launch<kIn, 4, true>(p, stream) : Launch<kIn, 2, true>(p, stream);
    }
    return InvalidArgumentError("SelectiveScan: state statistics are taken on FP16 prefill forwards only");
  }
  if (p.seqlen == 1) return channels >= 32768 ? Launch<kIn, 16>(p, stream) : Launch<kIn, 4>(p, stream);
  return channels >= 8192 ? Launch<kIn, 4>(p, stream) : Launch<kIn, 2>(p, stream);
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

Status LaunchSelectiveScan(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.seqlen <= 0) return OkStatus();
  if (p.quantize_output_product || p.state_rotation != nullptr) return LaunchSelectiveScanStepwise(p, stream);
  if (p.N != kN) return UnimplementedError("SelectiveScan: the CUDA scan supports state_size 16 only");
  if (p.batch > 65535) return InvalidArgumentError("SelectiveScan: batch too large");
  // The chunk copies are 16-byte rows of 8 channels (half) or 4 (INT32, float) and 4 B|C values.
  const size_t raw_size = p.delta.kind == ActKind::kF16 ? 2 : 4;
  if (p.E % 8 != 0 || !Aligned16(p.delta.data) || !Aligned16(p.z.data) || !Aligned16(p.u) ||
      (p.delta.ld * raw_size) % 16 != 0 || (p.z.ld * raw_size) % 16 != 0 || !Aligned16(p.dbc + p.R) ||
      p.dbc_ld % 4 != 0)
    return InvalidArgumentError("SelectiveScan: d_inner must be a multiple of 8 and rows (Δ, z, u, B|C) 16-byte aligned");
  const bool f16 = p.delta.kind == ActKind::kF16 && p.z.kind == ActKind::kF16 && !p.u_f32 && p.y_f16 != nullptr;
  const bool int8 = p.delta.kind == ActKind::kInt32Acc && p.z.kind == ActKind::kInt32Acc && p.u_f32 && p.y_f32 != nullptr;
  // One decode step: the state (and A) move as 16-byte vectors, one thread a channel, when aligned.
  if ((f16 || int8) && p.seqlen == 1 && p.state_absmax == nullptr && Aligned16(p.ssm_state) && Aligned16(p.A2) &&
      (p.slot_stride * state::DtypeBytes(p.state_dtype)) % 16 == 0)
    return LaunchSelectiveScanStep(p, stream);
  if (f16) return LaunchPath<ActKind::kF16>(p, stream);
  if (int8) return LaunchPath<ActKind::kInt32Acc>(p, stream);
  return InvalidArgumentError("SelectiveScan: supported are the FP16 path (half Δ/z/u/y) and the INT8 path "
                              "(accumulator Δ/z, float u/y)");
}

}  // namespace mq::cuda
