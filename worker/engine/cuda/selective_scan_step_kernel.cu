// One decode step of the selective scan (L = 1) for the per-stage path (batches above the layer
// kernels' limit). At batch 64 on the 2.8b shape the state is 21 MB a layer, read and written once:
// the chunked prefill kernel (selective_scan_kernel.cu) moved it at 0.43 TB/s (58 µs a layer,
// Nsight Compute), its per-thread scalar loads 64 B apart. Here one thread owns one (sequence,
// channel): its 16 states and A·log2(e) come in and go out as four 16-byte vectors, so a warp's
// accesses are 2 KB contiguous, and B|C of the block's sequence are staged once in shared memory.
// The arithmetic is the prefill kernel's with 16 states a lane (hd::ScanStep<16>).
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kN = 16;
constexpr int kThreads = 128;

template <ActKind kIn>
__global__ void __launch_bounds__(kThreads) SelectiveScanStepKernel(SelectiveScanParams p) {
  __shared__ float bc[2 * kN];
  const int64_t b = blockIdx.y;  // the sequence, = its token row (L = 1)
  if (threadIdx.x < 2 * kN) bc[threadIdx.x] = p.dbc[b * p.dbc_ld + p.R + threadIdx.x];
  __syncthreads();
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (c >= p.E) return;
  float4* hs = reinterpret_cast<float4*>(p.ssm_state + p.slot_ids[b] * p.slot_stride + c * kN);
  const float4* as = reinterpret_cast<const float4*>(p.A2 + c * kN);
  float h[kN], a2[kN];
#pragma unroll
  for (int v = 0; v < kN / 4; ++v) {
    const float4 hv = hs[v], av = as[v];
    h[4 * v] = hv.x, h[4 * v + 1] = hv.y, h[4 * v + 2] = hv.z, h[4 * v + 3] = hv.w;
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
#pragma unroll
  for (int v = 0; v < kN / 4; ++v) hs[v] = make_float4(h[4 * v], h[4 * v + 1], h[4 * v + 2], h[4 * v + 3]);
}

}  // namespace

Status LaunchSelectiveScanStep(const SelectiveScanParams& p, cudaStream_t stream) {
  if (p.seqlen != 1) return InvalidArgumentError("SelectiveScanStep: one decode step (seqlen 1) only");
  if (p.batch > 65535) return InvalidArgumentError("SelectiveScan: batch too large");
  const dim3 grid(static_cast<unsigned>((p.E + kThreads - 1) / kThreads), static_cast<unsigned>(p.batch));
  if (p.delta.kind == ActKind::kF16) {
    SelectiveScanStepKernel<ActKind::kF16><<<grid, kThreads, 0, stream>>>(p);
  } else {
    SelectiveScanStepKernel<ActKind::kInt32Acc><<<grid, kThreads, 0, stream>>>(p);
  }
  MQ_CUDA_CHECK_LAUNCH("SelectiveScanStepKernel");
  return OkStatus();
}

}  // namespace mq::cuda
