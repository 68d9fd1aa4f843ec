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
// 2^x for the scan's decay exp(δ·A) = 2^(δ·A·log2 e) (A·log2 e precomputed, as the language
// scan does): exp2f is MUFU.EX2 with range handling, 2 ulp, several times cheaper than expf.
MQ_VIM_HD float Exp2(float x) {
#if defined(__CUDA_ARCH__)
  return exp2f(x);
#else
  return std::exp2(x);
#endif
}
inline constexpr float kLog2e = 1.4426950408889634f;
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

// The scan splits a channel's states over kLanes lanes of a warp: 4 when few sequences would
// leave most of the GPU idle (a short serial chain a channel), else 1 (no shuffles, no repeated
// loads of δ and u). Measured on the H100 with Vim-tiny: 4 lanes 1.5 vs 2.4 ms a call at batch 1,
// 1 lane 9.9 vs 18.6 ms at batch 256.
MQ_VIM_HD int ScanLanes(int64_t batch, int64_t E) { return 2 * batch * E >= 16384 ? 1 : 4; }

// One step of one lane's states (cpu/selective_scan.cc's arithmetic, the decay as 2^(δ·a2) with
// a2 = A·log2 e): h ← exp(δ·A)⊙h + δ·u·B; returns this lane's part of h·C (n ascending).
template <int kNpt>
MQ_VIM_HD float ScanPartial(float* h, const float* a2, float dt, float dtu, const float* B, const float* C) {
  float acc = 0.0f;
#if defined(__CUDACC__)
#pragma unroll
#endif
  for (int n = 0; n < kNpt; ++n) {
    h[n] = Exp2(dt * a2[n]) * h[n] + dtu * B[n];
    acc += h[n] * C[n];
  }
  return acc;
}
// y from the lanes' parts, added in the kernel's order ((p0 + p1) + (p2 + p3) for 4 lanes), plus D·u.
template <int kLanes>
MQ_VIM_HD float ScanOutput(const float* part, float d, float u) {
  static_assert(kLanes == 1 || kLanes == 4, "the scan runs 1 or 4 lanes a channel");
  if constexpr (kLanes == 1) {
    return part[0] + d * u;
  } else {
    return ((part[0] + part[1]) + (part[2] + part[3])) + d * u;
  }
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
