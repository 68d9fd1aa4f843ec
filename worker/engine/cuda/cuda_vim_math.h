// The per-element arithmetic and index maps of the CUDA Vim kernels (cuda_vim_kernels.cu), shared
// with their CPU twin (tests/engine/cuda_vim_twin_test.cc): the same source line runs on both
// sides, so the twin checks the kernels' arithmetic and indexing against the CPU forward
// (vim/vim_forward.cc) without a GPU. Plain C++ when not under nvcc.
//
// Layout: activations are row-major [tokens, features], token row b·L + t. The backward branch
// is stored in its own (reversed) time, as the CPU forward computes it: branch row
// (B + b)·L + t' holds original time L−1−t'. So the scan runs both directions forward in time
// over 2·B sequences, and only the conv (reading x) and the gate (reading y_b) map the rows.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MQ_VIM_HD __host__ __device__ __forceinline__
#else
#define MQ_VIM_HD inline
#endif

namespace mq::cuda::vim {

// Full-precision exp on both sides (expf, not __expf): the float path must meet ‖Δ‖/‖ref‖ ≤ 1e-4
// against the float32 reference through 24 blocks.
MQ_VIM_HD float Exp(float x) {
#if defined(__CUDA_ARCH__)
  return expf(x);
#else
  return std::exp(x);
#endif
}
MQ_VIM_HD float Silu(float x) { return x / (1.0f + Exp(-x)); }
MQ_VIM_HD float Softplus(float x) {  // torch's threshold 20
#if defined(__CUDA_ARCH__)
  return x > 20.0f ? x : log1pf(expf(x));
#else
  return x > 20.0f ? x : std::log1p(std::exp(x));
#endif
}

// Row of original-time token (b, t) in branch `dir` (0 forward, 1 backward) of the [2·B·L, ·]
// branch buffers.
MQ_VIM_HD int64_t BranchRow(int dir, int64_t b, int64_t t, int64_t batch, int64_t L) {
  return dir == 0 ? b * L + t : (batch + b) * L + (L - 1 - t);
}

// Row of the residual stream a token of the sequence takes (3.3): patch rows before the cls
// position, the cls token at it (returns −1), patch t−1 after it.
MQ_VIM_HD int64_t PatchRowOfToken(int64_t b, int64_t t, int64_t M, int64_t cls) {
  return t < cls ? b * M + t : t == cls ? -1 : b * M + t - 1;
}

// im2col: column k = (ch·P + a)·P + j of patch g of image b reads pixel (ch, gi·S + a, gj·S + j).
MQ_VIM_HD int64_t PatchPixel(int64_t b, int64_t g, int64_t k, int64_t C, int64_t H, int64_t P, int64_t S, int64_t G) {
  const int64_t ch = k / (P * P), a = (k / P) % P, j = k % P;
  const int64_t gi = g / G, gj = g % G;
  return ((b * C + ch) * H + gi * S + a) * H + gj * S + j;
}

// Causal depthwise conv + SiLU of channel e at branch time t of branch `dir` (x: in_proj's output,
// rows ld_x apart, original time). In its own time each branch is the CPU's causal conv: the
// backward branch reads x at original time L−1−s for its time s.
MQ_VIM_HD float ConvSilu(const float* x, int64_t ld_x, const float* w, float bias, int dir, int64_t b, int64_t t,
                         int64_t e, int64_t L, int64_t K) {
  float acc = bias;
  for (int64_t k = 0; k < K; ++k) {
    const int64_t s = t - (K - 1) + k;
    if (s >= 0) {
      const int64_t orig = dir == 0 ? s : L - 1 - s;
      acc += w[k] * x[(b * L + orig) * ld_x + e];
    }
  }
  return Silu(acc);
}

// One step of the selective scan of one channel (cpu/selective_scan.cc's arithmetic):
// h ← exp(δ·A)⊙h + δ·u·B;  returns h·C + D·u. δ is the softplus'ed step.
template <int kN>
MQ_VIM_HD float ScanStep(float* h, const float* a, float dt, float u, float d, const float* B, const float* C) {
  const float dtu = dt * u;
  float acc = 0.0f;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int n = 0; n < kN; ++n) {
    h[n] = Exp(dt * a[n]) * h[n] + dtu * B[n];
    acc += h[n] * C[n];
  }
  return acc + d * u;
}

// The gated, combined mixer output of one element (3.5 step 4): both branches share SiLU(z)
// (S-SiLU z·σ(s·z) with the smooth-fused rotation's gate scale).
MQ_VIM_HD float Gate(float yf, float yb, float z, const float* gate_scale, int64_t e, float out_scale) {
  const float gate = gate_scale != nullptr ? z / (1.0f + Exp(-gate_scale[e] * z)) : Silu(z);
  return (yf * gate + yb * gate) * out_scale;
}

// RMSNorm's inverse root from the row's float64 sum of squares, and one output (the CPU's
// RmsNormRows: γ·(x·inv)).
MQ_VIM_HD float RmsInv(double sum_squares, int64_t d, double eps) {
  return static_cast<float>(1.0 / sqrt(sum_squares / static_cast<double>(d) + eps));
}
MQ_VIM_HD float RmsOut(float x, float inv, float gamma) { return gamma * (x * inv); }

}  // namespace mq::cuda::vim
