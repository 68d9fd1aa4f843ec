// The float arithmetic of one decode step that the CPU reference (cpu/mamba_forward.cc,
// cpu/selective_scan.cc) and the GPU's few-token decode kernels (cuda/decode_kernels.cu,
// cuda/decode_persistent_kernel.cu) share line for line, so that a quantized model decodes to the
// same bits on both: its INT8 codes depend on every float before them (a per-token scale is a
// row's |max|; one ulp moves a value across a rounding boundary now and then, and the recurrent
// state carries the change on), which is how a GPU decode whose INT8 GEMMs were exact still
// differed from the CPU's in perplexity by 0.025 % (docs/quantization.md).
//
// What makes two IEEE machines agree:
//   * every multiply and add rounds on its own (Mul, Add): nvcc fuses a·b + c into one FMA by
//     default and an x86-64 build without FMA does not, so the two would round differently;
//   * exp, 2^x and log1p are computed here from those operations (range reduction that is exact,
//     a fixed polynomial, scaling by an exact power of two), not by libm or the GPU's MUFU
//     approximations (each correct to an ulp or two, but not the same ulp);
//   * sums run in one fixed order (the scan's Σ h·C over the N states ascending).
// Accuracy: Exp and Exp2 within 2 ulp, Log1p within 3 ulp of the exact values over their ranges
// (tests/engine/step_math_test.cc sweeps them against long double, in CI). That the device computes
// the host's bits is checked end to end on the GPU: a quantized model's decode state equals the
// CPU's bit for bit (tests/engine/cuda_state_gpu_test.cc, Int8LayerKernelDecodeIsBitIdenticalToCpu).
// Plain C++ when not under nvcc; no engine dependencies.
#pragma once

#include <cstdint>

#include "model/float_bits.h"

#if defined(__CUDACC__)
#define MQ_SM __host__ __device__ __forceinline__
#else
#define MQ_SM inline
#endif

namespace mq::step_math {

// ---- single IEEE operations, never fused --------------------------------------------------------
MQ_SM float Mul(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fmul_rn(a, b);
#else
  return a * b;
#endif
}
MQ_SM float Add(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fadd_rn(a, b);
#else
  return a + b;
#endif
}
MQ_SM float Div(float a, float b) {
#if defined(__CUDA_ARCH__)
  return __fdiv_rn(a, b);
#else
  return a / b;
#endif
}
// Round to the nearest integer, ties to even (the default rounding mode on both sides).
MQ_SM float Rint(float x) {
#if defined(__CUDA_ARCH__)
  return rintf(x);
#else
  return __builtin_rintf(x);
#endif
}
MQ_SM bool IsNan(float x) { return x != x; }
constexpr float kInf = __builtin_huge_valf();

// p·2^k for an integer k in [-150, 128]: two multiplications by exact powers of two (the first
// exact, the second — by 1 when k fits one — rounds once if the result is subnormal or
// overflows), identical on both sides. Branch-free, so that the CPU's scan loop vectorizes.
MQ_SM float Scale(float p, int k) {
  const int k1 = k > 127 ? 127 : k < -126 ? -126 : k;
  const int k2 = k - k1;
  return Mul(Mul(p, BitsFloat(static_cast<uint32_t>(k1 + 127) << 23)), BitsFloat(static_cast<uint32_t>(k2 + 127) << 23));
}
// An integer-valued float (or NaN) as an int; NaN becomes 0 (its NaN travels in the polynomial).
MQ_SM int ToInt(float k) { return static_cast<int>(k == k ? k : 0.0f); }

// ---- exp, 2^x, log1p --------------------------------------------------------------------------
// e^r for |r| ≤ 0.35 (Taylor to degree 8; truncation below 1e-9 relative), Horner.
MQ_SM float ExpPoly(float r) {
  float p = 2.48015873e-05f;  // 1/8!
  p = Add(Mul(p, r), 1.98412698e-04f);  // 1/7!
  p = Add(Mul(p, r), 1.38888889e-03f);  // 1/6!
  p = Add(Mul(p, r), 8.33333333e-03f);  // 1/5!
  p = Add(Mul(p, r), 4.16666667e-02f);  // 1/4!
  p = Add(Mul(p, r), 1.66666667e-01f);  // 1/3!
  p = Add(Mul(p, r), 0.5f);
  p = Add(Mul(p, r), 1.0f);
  return Add(Mul(p, r), 1.0f);
}
// ln 2 split so that k·kLn2Hi is exact for |k| < 2^9 (kLn2Hi has 16 significant bits).
constexpr float kLn2Hi = 0.693145751953125f;
constexpr float kLn2Lo = 1.42860682030941723e-06f;
constexpr float kLog2e = 1.4426950408889634f;  // also the GPU's A·log2(e) (cuda_mamba_model.cu)

// e^x: k = rint(x·log2 e), r = x − k·ln 2 (Cody–Waite, exact first step), e^r · 2^k.
// Inputs beyond [-104, 89] are clamped there (results 0 and +∞); NaN stays NaN.
MQ_SM float Exp(float x) {
  const float xc = x < -104.0f ? -104.0f : x > 89.0f ? 89.0f : x;
  const float k = Rint(Mul(xc, kLog2e));
  const float r = Add(Add(xc, Mul(-k, kLn2Hi)), Mul(-k, kLn2Lo));
  return Scale(ExpPoly(r), ToInt(k));
}
// 2^y: k = rint(y), f = y − k (exact), e^(f·ln 2) · 2^k. The scan's decay exp(Δ·A) is computed
// as 2^(Δ·(A·log2 e)), with A·log2 e rounded once (the GPU stores it so, cuda_mamba_model.cu).
// Inputs beyond [-150, 128] are clamped there (results 0 and +∞); NaN stays NaN.
MQ_SM float Exp2(float y) {
  const float yc = y < -150.0f ? -150.0f : y > 128.0f ? 128.0f : y;
  const float k = Rint(yc);
  const float f = Add(yc, -k);
  // e^(f·ln2) with ln 2 split like Exp's reduction, so the product's rounding stays small.
  const float r = Add(Mul(f, kLn2Hi), Mul(f, kLn2Lo));
  return Scale(ExpPoly(r), ToInt(k));
}
// ln u for a finite u ≥ 1: u = (1 + f)·2^e with 1 + f in [√½, √2) (f exact), then fdlibm's
// ln(1 + f) = f − (f²/2 − s·(f²/2 + R(s²))), s = f/(2 + f), |s| ≤ 0.172, R the atanh series
// from 2/3 to 2/11 (truncation below 1e-10 relative).
MQ_SM float LogAtLeastOne(float u) {
  const uint32_t bits = FloatBits(u);
  int e = static_cast<int>((bits >> 23) & 0xff) - 127;
  float m = BitsFloat((bits & 0x007fffffu) | 0x3f800000u);  // [1, 2)
  if (m > 1.41421356f) m = Mul(m, 0.5f), ++e;
  const float f = Add(m, -1.0f);  // exact (Sterbenz)
  const float s = Div(f, Add(2.0f, f));
  const float z = Mul(s, s);
  float r = 1.81818182e-01f;                 // 2/11
  r = Add(Mul(r, z), 2.22222222e-01f);       // 2/9
  r = Add(Mul(r, z), 2.85714286e-01f);       // 2/7
  r = Add(Mul(r, z), 4.0e-01f);              // 2/5
  r = Add(Mul(r, z), 6.66666667e-01f);       // 2/3
  r = Mul(r, z);
  const float hfsq = Mul(Mul(0.5f, f), f);
  const float fe = static_cast<float>(e);
  // e·ln2_hi − ((hfsq − (s·(hfsq + R) + e·ln2_lo)) − f)
  const float inner = Add(Mul(s, Add(hfsq, r)), Mul(fe, kLn2Lo));
  return Add(Mul(fe, kLn2Hi), -Add(Add(hfsq, -inner), -f));
}
// ln(1 + y) for y ≥ 0 (finite or +∞): Goldberg's form ln(u)·y/(u − 1) with u = 1 + y rounded,
// which keeps the relative accuracy for small y.
MQ_SM float Log1p(float y) {
  if (IsNan(y) || y == kInf) return y;
  const float u = Add(1.0f, y);
  if (u == 1.0f) return y;
  return Mul(LogAtLeastOne(u), Div(y, Add(u, -1.0f)));
}

// ---- the decode step's activations ------------------------------------------------------------
MQ_SM float Silu(float x) { return Div(x, Add(1.0f, Exp(-x))); }
// S-SiLU of the smooth-fused rotation: z·σ(s·z).
MQ_SM float SmoothSilu(float z, float s) { return Div(z, Add(1.0f, Exp(-Mul(s, z)))); }
// torch.nn.functional.softplus with its default threshold 20 (e^x ≥ 1 there, so Log1p's
// argument is e^x ≥ 0 throughout).
MQ_SM float Softplus(float x) { return x > 20.0f ? x : Log1p(Exp(x)); }

// u = SiLU(bias + Σ_k w[k]·window[k]) of one channel and step: window = the K−1 previous inputs
// (oldest first) then this step's x.
MQ_SM float ConvStepSilu(const float* prev, const float* w, float bias, int64_t K, float x) {
  float acc = bias;
  for (int64_t k = 0; k + 1 < K; ++k) acc = Add(acc, Mul(w[k], prev[k]));
  acc = Add(acc, Mul(w[K - 1], x));
  return Silu(acc);
}

// A·log2 e, rounded once: the scan's a2 (the GPU uploads it so, cuda_mamba_model.cu; the CPU
// computes it once a scan).
MQ_SM float ScanA2(float a) { return Mul(a, kLog2e); }
// One state entry of the selective scan: h ← 2^(Δ·a2)·h + (Δ·u)·b, a2 = ScanA2(A); returns h.
MQ_SM float ScanState(float h, float a2, float dt, float dtu, float b) {
  return Add(Mul(Exp2(Mul(dt, a2)), h), Mul(dtu, b));
}
// y of one channel and step from prod[n] = Mul(h[n], C[n]): (Σ prod[n], n ascending from 0, from
// 0.0f) + D·u, times the gate.
MQ_SM float ScanOutput(const float* prod, int64_t N, float D, float u, float gate) {
  float acc = 0.0f;
  for (int64_t n = 0; n < N; ++n) acc = Add(acc, prod[n]);
  return Mul(Add(acc, Mul(D, u)), gate);
}

}  // namespace mq::step_math
