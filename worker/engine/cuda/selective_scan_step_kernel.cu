// One decode step of the selective scan (L = 1) for the per-stage path (batches above the layer
// kernels' limit). At batch 64 on the 2.8b shape the state is 21 MB a layer, read and written once:
// the chunked prefill kernel (selective_scan_kernel.cu) moved it at 0.43 TB/s (58 µs a layer,
// Nsight Compute), its per-thread scalar loads 64 B apart. Here one thread owns one (sequence,
// channel): its 16 states and A·log2(e) come in and go out as four 16-byte vectors, so a warp's
// accesses are 2 KB contiguous, and B|C of the block's sequence are staged once in shared memory.
// The arithmetic is the prefill kernel's with 16 states a lane (hd::ScanStep<16>).
// The state is stored in the model's state dtype (model/state_dtype.h): 64 bytes a channel in
// fp32, 32 in fp16/bf16, 16 plus a float scale in int8, still whole 16-byte vectors.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"
#include "cuda/l2_prefetch.cuh"

namespace mq::cuda {
namespace {

constexpr int kN = 16;
constexpr int kThreads = 128;

// The 16 states of one channel at element offset `off` (16-byte aligned) as whole 16-byte
// vectors, packed and unpacked by model/state_dtype.h (PackWords16 / UnpackWords16).
template <StateDtype kD>
__device__ __forceinline__ void LoadState16(const void* base, int64_t off, float scale, float* h) {
  constexpr int kVecs = state::DtypeBytes(kD);  // 16-byte vectors a row: 16 values · bytes / 16
  const uint4* v = reinterpret_cast<const uint4*>(static_cast<const char*>(base) + off * state::DtypeBytes(kD));
  uint32_t w[4 * kVecs];
#pragma unroll
  for (int i = 0; i < kVecs; ++i) {
    const uint4 x = v[i];
    w[4 * i] = x.x, w[4 * i + 1] = x.y, w[4 * i + 2] = x.z, w[4 * i + 3] = x.w;
  }
  state::UnpackWords16(kD, w, scale, h);
}

// Stores them back, rounded as state::StoreRow defines (int8: the row's scale into *scale).
template <StateDtype kD>
__device__ __forceinline__ void StoreState16(void* base, int64_t off, const float* h, float* scale) {
  constexpr int kVecs = state::DtypeBytes(kD);
  const float s = state::RowScale(kD, h, kN);
  uint32_t w[4 * kVecs];
  state::PackWords16(kD, h, 1.0f / s, w);
  uint4* v = reinterpret_cast<uint4*>(static_cast<char*>(base) + off * state::DtypeBytes(kD));
#pragma unroll
  for (int i = 0; i < kVecs; ++i) v[i] = make_uint4(w[4 * i], w[4 * i + 1], w[4 * i + 2], w[4 * i + 3]);
  if constexpr (kD == StateDtype::kInt8) *scale = s;
}

template <ActKind kIn, StateDtype kD>
__global__ void __launch_bounds__(kThreads) SelectiveScanStepKernel(SelectiveScanParams p) {
  __shared__ float bc[2 * kN];
  const int64_t b = blockIdx.y;  // the sequence, = its token row (L = 1)
  PrefetchAhead(p.l2_ahead);  // the previous kernel is complete: DRAM is free for the next weights
  if (threadIdx.x < 2 * kN) bc[threadIdx.x] = p.dbc[b * p.dbc_ld + p.R + threadIdx.x];
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= p.E) return;
  const int64_t slot = p.slot_ids[b], off = slot * p.slot_stride + c * kN;
  float* scale = kD == StateDtype::kInt8 ? p.ssm_scale + slot * p.scale_slot_stride + c : nullptr;
  const float4* as = reinterpret_cast<const float4*>(p.A2 + c * kN);
  float h[kN], a2[kN];
  LoadState16<kD>(p.ssm_state, off, kD == StateDtype::kInt8 ? *scale : 1.0f, h);
#pragma unroll
  for (int v = 0; v < kN / 4; ++v) {
    const float4 av = as[v];
    a2[4 * v] = av.x, a2[4 * v + 1] = av.y, a2[4 * v + 2] = av.z, a2[4 * v + 3] = av.w;
  }
  const float dt = hd::Softplus(LoadAct<kIn>(p.delta, b, c));  // biases included by LoadAct
  const float zr = LoadAct<kIn>(p.z, b, c);
  const float gate = p.gate_scale != nullptr ? hd::SmoothSilu(zr, p.gate_scale[c]) : hd::Silu(zr);
  float uu;
  if constexpr (kIn == ActKind::kF16) {
    uu = __half2float(static_cast<const __half*>(p.u)[b * p.E + c]);
  } else {
    uu = static_cast<const float*>(p.u)[b * p.E + c];
  }
  const float part = hd::ScanStep<kN>(h, a2, dt, dt * uu, bc, bc + kN);
  const float y = (part + p.D[c] * uu) * gate;
  if constexpr (kIn == ActKind::kF16) {
    p.y_f16[b * p.E + c] = __float2half_rn(y);
  } else {
    p.y_f32[b * p.E + c] = y;
  }
  StoreState16<kD>(p.ssm_state, off, h, scale);
}

template <ActKind kIn>
void LaunchDtype(const SelectiveScanParams& p, dim3 grid, cudaStream_t stream) {
  switch (p.state_dtype) {
    case StateDtype::kF32: SelectiveScanStepKernel<kIn, StateDtype::kF32><<<grid, kThreads, 0, stream>>>(p); break;
    case StateDtype::kF16: SelectiveScanStepKernel<kIn, StateDtype::kF16><<<grid, kThreads, 0, stream>>>(p); break;
    case StateDtype::kBF16: SelectiveScanStepKernel<kIn, StateDtype::kBF16><<<grid, kThreads, 0, stream>>>(p); break;
    case StateDtype::kInt8: SelectiveScanStepKernel<kIn, StateDtype::kInt8><<<grid, kThreads, 0, stream>>>(p); break;
  }
}

}  // namespace

Status LaunchSelectiveScanStep(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.seqlen != 1) return InvalidArgumentError("SelectiveScanStep: one decode step (seqlen 1) only");
  if (p.batch > 65535) return InvalidArgumentError("SelectiveScan: batch too large");
  const dim3 grid(static_cast<unsigned>((p.E + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  if (p.delta.kind == ActKind::kF16) {
    LaunchDtype<ActKind::kF16>(p, grid, stream);
  } else {
    LaunchDtype<ActKind::kInt32Acc>(p, grid, stream);
  }
  MQ_CUDA_CHECK_LAUNCH("SelectiveScanStepKernel");
  return OkStatus();
}

}  // namespace mq::cuda
