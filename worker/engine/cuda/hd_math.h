// Scalar math shared by the CUDA kernels and their CPU twins (tests/engine/cuda_*_test.cc):
// the same source line runs on both sides, so a twin checks the kernel's arithmetic (rounding,
// blocking, index maps) against the CPU reference without a GPU. Plain C++ when not under nvcc.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MQ_HD __host__ __device__ __forceinline__
#else
#define MQ_HD inline
#endif

namespace mq::cuda::hd {

// ---- INT8 quantization, exactly as model/linear.cc (round half to even, clamp ±127) ----------
// Scale of a row from its absolute maximum: s = amax / 127, or 1 for an all-zero row.
MQ_HD float ScaleFromAbsMax(float amax) { return amax > 0.0f ? amax / 127.0f : 1.0f; }
MQ_HD int8_t QuantizeValue(float x, float inv_scale) {
#if defined(__CUDA_ARCH__)
  float v = rintf(x * inv_scale);
  v = fminf(fmaxf(v, -127.0f), 127.0f);
#else
  float v = std::nearbyint(x * inv_scale);
  v = std::clamp(v, -127.0f, 127.0f);
#endif
  return static_cast<int8_t>(v);
}
// INT8 GEMM dequantization: acc · s_x[token] · s_w[channel] (+ bias), in this order.
MQ_HD float Dequantize(int32_t acc, float sx, float sw) { return static_cast<float>(acc) * sx * sw; }

// ---- activations -----------------------------------------------------------------------------
MQ_HD float Exp(float x) {
#if defined(__CUDA_ARCH__)
  return __expf(x);
#else
  return std::exp(x);
#endif
}
MQ_HD float Silu(float x) { return x / (1.0f + Exp(-x)); }
// S-SiLU of the smooth-fused rotation: z'·σ(s·z') (= SiLU(z)/s for z' = z/s).
MQ_HD float SmoothSilu(float z, float s) { return z / (1.0f + Exp(-s * z)); }
// torch.nn.functional.softplus with threshold 20.
MQ_HD float Softplus(float x) {
#if defined(__CUDA_ARCH__)
  return x > 20.0f ? x : log1pf(__expf(x));
#else
  return x > 20.0f ? x : std::log1p(std::exp(x));
#endif
}

// ---- fast Hadamard ----------------------------------------------------------------------------
// Level h of the radix-2 Walsh–Hadamard transform over chunks of p values: butterfly number i
// (0 <= i < n/2) pairs positions lo and lo + h, lo = chunk·p + (j / h)·2h + j % h with
// j = i mod p/2. Levels run h = 1, 2, 4, …, p/2, which is exactly the arithmetic of the CPU
// transform (its radix-8/radix-4 passes are the same additions in the same order).
// h and p are powers of two, so the divisions are masks and shifts (log2_half = log2(p/2)).
MQ_HD int ButterflyLow(int i, int h, int p, int log2_half) {
  const int j = i & ((p >> 1) - 1);
  const int chunk = i >> log2_half;
  return chunk * p + ((j & ~(h - 1)) << 1) + (j & (h - 1));
}
// The same levels with a chunk of P = 32·V values spread over a warp (lane l holds positions
// l·V … l·V+V−1): level h = k·V ≥ V pairs lane l with lane l ^ k, element for element; the lane
// without bit k holds the low position. Returns the lane's new value (a + b or a − b of the pair).
MQ_HD float WarpButterfly(float mine, float other, bool low) { return low ? mine + other : other - mine; }
// Output o of column j of the m×m mix: Σ_i coef[o·m + i]·x[i·p + j], i ascending, starting from
// coef[o·m]·x[j] (±1 products are exact, so this equals the CPU's accumulation bit for bit).
MQ_HD float MixOutput(const float* x, const int8_t* coef, int m, int p, int o, int j) {
  float acc = static_cast<float>(coef[o * m]) * x[j];
  for (int i = 1; i < m; ++i) acc += static_cast<float>(coef[o * m + i]) * x[i * p + j];
  return acc;
}

// ---- selective scan ---------------------------------------------------------------------------
// One time step of kNpt of the N state entries of one channel; returns Σ h·C over those entries.
// a2 = A·log2(e), so exp(Δ·A) = 2^(Δ·a2).
template <int kNpt>
MQ_HD float ScanStep(float* h, const float* a2, float dt, float dtu, const float* b, const float* c) {
  float acc = 0.0f;
#if defined(__CUDACC__)  // as cuda_vim_math.h: host compilers warn on it
#pragma unroll
#endif
  for (int k = 0; k < kNpt; ++k) {
#if defined(__CUDA_ARCH__)
    float decay;  // MUFU.EX2 directly (exp2f adds denormal handling the decay never needs)
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(decay) : "f"(dt * a2[k]));
#else
    const float decay = std::exp2(dt * a2[k]);
#endif
    h[k] = decay * h[k] + dtu * b[k];
    acc += h[k] * c[k];
  }
  return acc;
}

// Scope `full`, one (step, channel) after the state update: y = (h·R4)·C, with `rot` ([kN, kN],
// row vectors times it) optional and, when `quantize`, the exact int32 product of h quantized with
// the channel's scale and C with the step's scale — the CPU's ScanStepwise (per_step_channel).
template <int kN>
MQ_HD float StateOutputProduct(const float* h, const float* rot, const float* c, bool quantize) {
  float hr[kN];
  for (int j = 0; j < kN; ++j) {
    float acc = 0.0f;
    if (rot != nullptr) {
      for (int n = 0; n < kN; ++n) acc += h[n] * rot[n * kN + j];
    } else {
      acc = h[j];
    }
    hr[j] = acc;
  }
  if (!quantize) {
    float y = 0.0f;
    for (int n = 0; n < kN; ++n) y += hr[n] * c[n];
    return y;
  }
  float amax_h = 0.0f, amax_c = 0.0f;
  for (int n = 0; n < kN; ++n) {
    const float ah = hr[n] < 0.0f ? -hr[n] : hr[n], ac = c[n] < 0.0f ? -c[n] : c[n];
    amax_h = ah > amax_h ? ah : amax_h;
    amax_c = ac > amax_c ? ac : amax_c;
  }
  const float sh = ScaleFromAbsMax(amax_h), sc = ScaleFromAbsMax(amax_c);
  const float inv_h = 1.0f / sh, inv_c = 1.0f / sc;
  int32_t acc = 0;
  for (int n = 0; n < kN; ++n)
    acc += static_cast<int32_t>(QuantizeValue(hr[n], inv_h)) * QuantizeValue(c[n], inv_c);
  return static_cast<float>(acc) * sh * sc;
}

// ---- INT8 GEMV blocking ------------------------------------------------------------------------
// The decode GEMV (int8_gemv_kernel.cu) reads weights in 16-byte chunks (k padded to a multiple of
// 16 with zeros). A block has kGemvWarps warps. A warp owns rows_per_warp consecutive output rows:
// its 32 lanes split into groups of `group` lanes, group g reading row g. With ksplit > 1 (few
// output rows, long k) ksplit warps share the same rows, warp part kp reading every ksplit-th
// stride of chunks; the block sums the parts in shared memory. Lane l of a group reads the chunks
// GemvChunk(layout, kp, l, it) for it = 0, 1, … while < chunks. Integer sums are exact, so only
// coverage matters: every chunk of every row exactly once (the CPU twin checks this).
constexpr int kGemvWarps = 8;
struct GemvLayout {
  int rows_per_warp = 0;  // rows of one warp (1, 2, 4 or 8)
  int group = 0;          // lanes per row = 32 / rows_per_warp
  int ksplit = 1;         // warps sharing the same rows (1 or kGemvWarps)
  int64_t chunks = 0;     // 16-byte chunks per row
  int64_t iters = 0;      // chunk iterations per lane
  MQ_HD int64_t rows_per_block() const { return static_cast<int64_t>(kGemvWarps / ksplit) * rows_per_warp; }
};
MQ_HD GemvLayout ChooseGemvLayout(int64_t k_padded, int64_t out) {
  GemvLayout l;
  l.chunks = k_padded / 16;
  // Short rows (dt_proj, k = dt_rank) give each row fewer lanes so that lanes stay busy.
  l.rows_per_warp = l.chunks >= 128 ? 1 : l.chunks >= 48 ? 2 : l.chunks >= 16 ? 4 : 8;
  l.group = 32 / l.rows_per_warp;
  // Few rows (x_proj, or out_proj of small models): split k over the block's warps so that the
  // GPU still has enough loads in flight.
  l.ksplit = (out < 2048 && l.chunks >= static_cast<int64_t>(l.group) * kGemvWarps) ? kGemvWarps : 1;
  const int64_t stride = static_cast<int64_t>(l.group) * l.ksplit;
  l.iters = (l.chunks + stride - 1) / stride;
  return l;
}
MQ_HD int64_t GemvChunk(const GemvLayout& l, int kpart, int lane_in_group, int64_t it) {
  return (it * l.ksplit + kpart) * l.group + lane_in_group;
}
// dp4a: Σ of four int8·int8 products, added to acc (the device uses the __dp4a instruction).
MQ_HD int32_t Dp4a(int32_t a, int32_t b, int32_t acc) {
#if defined(__CUDA_ARCH__)
  return __dp4a(a, b, acc);
#else
  for (int i = 0; i < 4; ++i)
    acc += static_cast<int32_t>(static_cast<int8_t>((a >> (8 * i)) & 0xff)) *
           static_cast<int32_t>(static_cast<int8_t>((b >> (8 * i)) & 0xff));
  return acc;
#endif
}

MQ_HD int64_t RoundUp(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

// The ±1 mix with its signs as bit masks: bit i of neg is set where coef[o·m + i] = −1
// (MixNegMask), and MixOutputMasked adds exactly what MixOutput adds, in the same order.
MQ_HD uint32_t MixNegMask(const int8_t* coef, int m, int o) {
  uint32_t neg = 0;
  for (int i = 0; i < m; ++i)
    if (coef[o * m + i] < 0) neg |= 1u << i;
  return neg;
}
MQ_HD float MixOutputMasked(const float* x, uint32_t neg, int m, int p, int j) {
  float acc = (neg & 1u) ? -x[j] : x[j];
  for (int i = 1; i < m; ++i) acc += ((neg >> i) & 1u) ? -x[i * p + j] : x[i * p + j];
  return acc;
}

// ---- decode GEMV plan (decode_kernels.cu) -------------------------------------------------------
// A decode GEMV block has kDecodeWarps warps. A warp task is a tile of kDecodeRows consecutive
// rows over a 1/parts share of k: part q reads the 16-byte chunks c with (c / 32) mod parts == q,
// lane l the chunks q·32 + l + i·32·parts; kDecodeUnroll of them per row are in flight at once.
// Block b owns tiles [b·tiles/grid, (b+1)·tiles/grid); warp w runs tasks w, w + kDecodeWarps, …
// (task = tile·parts + part). The CPU twin checks that every chunk of every row is read once.
constexpr int kDecodeWarps = 8;
constexpr int kDecodeRows = 2;
constexpr int kDecodeUnroll = 8;
struct DecodeGemvPlan {
  int64_t rows = 0;
  int64_t tiles = 0;
  int chunks = 0;               // 16-byte chunks per row
  int parts = 1;
  int grid = 0;
  int max_tiles = 0;            // most tiles of one block (sizes its partial sums)
  int64_t prefetch_bytes = 0;   // per block, bulk L2 prefetch (0: none)
};
// The GEMV is latency-bound unless every warp keeps many bytes in flight, so k is split only as
// far as needed to give every warp of the grid a task.
MQ_HD DecodeGemvPlan MakeDecodeGemvPlan(int64_t rows, int64_t ld_bytes, int64_t max_blocks, int64_t prefetch_total) {
  DecodeGemvPlan g;
  g.rows = rows;
  g.tiles = (rows + kDecodeRows - 1) / kDecodeRows;
  g.chunks = static_cast<int>(ld_bytes / 16);
  g.grid = static_cast<int>(g.tiles < max_blocks ? g.tiles : max_blocks);
  const int64_t warps = static_cast<int64_t>(g.grid) * kDecodeWarps;
  while (g.parts < kDecodeWarps && g.tiles * g.parts < warps && g.chunks >= 64 * g.parts) g.parts *= 2;
  g.max_tiles = static_cast<int>((g.tiles + g.grid - 1) / g.grid);
  g.prefetch_bytes = (prefetch_total / g.grid) / 16 * 16;
  return g;
}
MQ_HD void DecodeBlockTiles(const DecodeGemvPlan& g, int64_t block, int64_t* t0, int* n) {
  *t0 = block * g.tiles / g.grid;
  *n = static_cast<int>((block + 1) * g.tiles / g.grid - *t0);
}

}  // namespace mq::cuda::hd
