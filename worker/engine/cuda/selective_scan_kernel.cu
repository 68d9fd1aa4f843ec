// The Mamba-1 selective scan with its gate, for prefill (any L) and one decode step (L = 1):
//   Δ = softplus(δW_dtᵀ + b_dt),  h_t = exp(Δ_t A) ⊙ h_{t−1} + (Δ_t u_t) ⊗ B_t,
//   y_t = (h_t · C_t + D ⊙ u_t) ⊙ gate(z_t)
// Parallel over batch × channels (× state): a channel's 16 state entries sit in the registers of
// kTpc = 16/kNpt neighbouring lanes, which combine h·C by xor-shuffles. With many channels
// (prefill batches) one thread holds all 16 (kNpt = 16: 16 independent updates per step, no
// shuffles); with few (single-sequence prefill, decode) 4 lanes share a channel for parallelism.
// The block stages kChunk time steps of its channels (Δ, u, gate, B, C) in shared memory with
// coalesced loads, then steps through them; the state is read from and written back to the slot.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kN = 16;
constexpr int kThreads = 128;

template <typename T> __device__ __forceinline__ float ToF(T v);
template <> __device__ __forceinline__ float ToF<float>(float v) { return v; }
template <> __device__ __forceinline__ float ToF<__half>(__half v) { return __half2float(v); }
template <typename T> __device__ __forceinline__ T FromF(float v);
template <> __device__ __forceinline__ float FromF<float>(float v) { return v; }
template <> __device__ __forceinline__ __half FromF<__half>(float v) { return __float2half_rn(v); }

template <ActKind kIn, typename UT, typename YT, int kNpt>
__global__ void __launch_bounds__(kThreads) SelectiveScanKernel(SelectiveScanParams p, const UT* __restrict__ u,
                                                                YT* __restrict__ y) {
  constexpr int kTpc = kN / kNpt;               // threads per channel
  constexpr int kChannels = kThreads / kTpc;    // channels per block
  constexpr int kChunk = kNpt == 16 ? 16 : 32;  // time steps staged per pass
  __shared__ float s_delta[kChunk][kChannels];
  __shared__ float s_u[kChunk][kChannels];
  __shared__ float s_gate[kChunk][kChannels];
  __shared__ float s_y[kChunk][kChannels];
  __shared__ __align__(16) float s_bc[kChunk][2 * kN];

  const int64_t b = blockIdx.y;
  const int64_t c0 = static_cast<int64_t>(blockIdx.x) * kChannels;
  const int cl = threadIdx.x / kTpc, g = threadIdx.x % kTpc;
  const int64_t c = c0 + cl;
  const bool active = c < p.E;
  const int32_t slot = p.slot_ids[b];
  float* hstate = p.ssm_state + slot * p.slot_stride + (active ? c : 0) * kN + g * kNpt;

  float h[kNpt], a2[kNpt];
  float dcoef = 0.0f;
  if (active) {
#pragma unroll
    for (int k = 0; k < kNpt; ++k) {
      h[k] = hstate[k];
      a2[k] = p.A2[c * kN + g * kNpt + k];
    }
    dcoef = p.D[c];
  } else {
#pragma unroll
    for (int k = 0; k < kNpt; ++k) h[k] = a2[k] = 0.0f;
  }

  for (int64_t t0 = 0; t0 < p.seqlen; t0 += kChunk) {
    const int steps = static_cast<int>(p.seqlen - t0 < kChunk ? p.seqlen - t0 : kChunk);
    // Stage the chunk: Δ (bias + softplus), u and the gate per (step, channel); B|C per step.
    for (int i = threadIdx.x; i < kChunk * kChannels; i += kThreads) {
      const int tt = i / kChannels, cc = i % kChannels;
      const int64_t ch = c0 + cc;
      if (tt < steps && ch < p.E) {
        const int64_t row = b * p.seqlen + t0 + tt;
        s_delta[tt][cc] = hd::Softplus(LoadAct<kIn>(p.delta, row, ch));
        s_u[tt][cc] = ToF<UT>(u[row * p.E + ch]);
        const float z = LoadAct<kIn>(p.z, row, ch);
        s_gate[tt][cc] = p.gate_scale != nullptr ? hd::SmoothSilu(z, p.gate_scale[ch]) : hd::Silu(z);
      }
    }
    for (int i = threadIdx.x; i < kChunk * 2 * kN; i += kThreads) {
      const int tt = i / (2 * kN), n = i % (2 * kN);
      if (tt < steps) s_bc[tt][n] = p.dbc[(b * p.seqlen + t0 + tt) * p.dbc_ld + p.R + n];
    }
    __syncthreads();
#pragma unroll 4
    for (int tt = 0; tt < steps; ++tt) {
      const float dt = s_delta[tt][cl];
      const float uu = s_u[tt][cl];
      float bv[kNpt], cv[kNpt];
#pragma unroll
      for (int k = 0; k < kNpt; ++k) {
        bv[k] = s_bc[tt][g * kNpt + k];
        cv[k] = s_bc[tt][kN + g * kNpt + k];
      }
      float part = hd::ScanStep<kNpt>(h, a2, dt, dt * uu, bv, cv);
#pragma unroll
      for (int o = kTpc / 2; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
      if (g == 0) s_y[tt][cl] = (part + dcoef * uu) * s_gate[tt][cl];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < kChunk * kChannels; i += kThreads) {
      const int tt = i / kChannels, cc = i % kChannels;
      const int64_t ch = c0 + cc;
      if (tt < steps && ch < p.E) y[(b * p.seqlen + t0 + tt) * p.E + ch] = FromF<YT>(s_y[tt][cc]);
    }
    // The next chunk's staging overwrites s_delta/s_u/s_gate/s_bc, read only before the barrier
    // above; s_y is rewritten only after the next chunk's barrier.
  }
  if (active) {
#pragma unroll
    for (int k = 0; k < kNpt; ++k) hstate[k] = h[k];
  }
}

template <ActKind kIn, typename UT, typename YT>
Status Launch(const SelectiveScanParams& p, const UT* u, YT* y, cudaStream_t stream) {
  if (p.batch * p.E >= 32768) {
    const dim3 grid(static_cast<unsigned>((p.E + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
    SelectiveScanKernel<kIn, UT, YT, 16><<<grid, kThreads, 0, stream>>>(p, u, y);
  } else {
    const dim3 grid(static_cast<unsigned>((p.E + kThreads / 4 - 1) / (kThreads / 4)), static_cast<unsigned>(p.batch));
    SelectiveScanKernel<kIn, UT, YT, 4><<<grid, kThreads, 0, stream>>>(p, u, y);
  }
  MQ_CUDA_CHECK_LAUNCH("SelectiveScanKernel");
  return OkStatus();
}

}  // namespace

Status LaunchSelectiveScan(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.seqlen <= 0) return OkStatus();
  if (p.N != kN) return UnimplementedError("SelectiveScan: the CUDA scan supports state_size 16 only");
  if (p.batch > 65535) return InvalidArgumentError("SelectiveScan: batch too large");
  if (p.delta.kind == ActKind::kF16 && p.z.kind == ActKind::kF16 && !p.u_f32 && p.y_f16 != nullptr)
    return Launch<ActKind::kF16>(p, static_cast<const __half*>(p.u), p.y_f16, stream);
  if (p.delta.kind == ActKind::kInt32Acc && p.z.kind == ActKind::kInt32Acc && p.u_f32 && p.y_f32 != nullptr)
    return Launch<ActKind::kInt32Acc>(p, static_cast<const float*>(p.u), p.y_f32, stream);
  return InvalidArgumentError("SelectiveScan: supported are the FP16 path (half Δ/z/u/y) and the INT8 path "
                              "(accumulator Δ/z, float u/y)");
}

}  // namespace mq::cuda
