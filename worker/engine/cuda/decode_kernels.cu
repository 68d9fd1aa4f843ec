// Decode-step kernels (B ≤ kDecodeMaxBatch tokens): four launches per layer (five for INT8) plus the
// LM head; the split is described in kernel_params.h.
//
// Why this shape: at decode a layer is about ten small dependent steps. As separate launches
// (9 per layer) or as phases of one persistent kernel with grid-wide barriers, most of the step
// went to waiting on them (docs/benchmarks.md). Here every launch is a GEMV that streams its
// weights at bandwidth, and the latency-bound work in front of it (a norm, the conv of every
// channel, a Hadamard transform) is repeated by each block from L2 instead of being synchronized
// across the grid (the INT8 Hadamard, too long to repeat, has its own one-block-a-token kernel).
// Programmatic dependent launch lets a kernel's blocks start while the previous kernel runs: they
// issue their first weight loads and load their constants, then wait (griddepcontrol.wait) for the
// data they depend on. A bulk L2 prefetch of each block's weight slice is optional and measured
// slower (docs/benchmarks.md).
//
// Arithmetic is the per-stage kernels' (hd_math.h): INT8 GEMV sums are exact int32, quantization,
// dequantization, the scan step and the Hadamard butterflies are the same expressions.
//
// W4A8 (kW4): the four linears' weights are packed 4-bit (model/int4_pack.h), rows of ld/2 bytes.
// The GEMV keeps its plan (a chunk is still 16 weights against 16 activation bytes) but loads a
// chunk as 8 bytes and unpacks it in registers (hd::Int4Dot16, int4_math.h) into the dp4a words the
// INT8 kernels would have loaded: the int32 sums, and so everything after them, equal the INT8
// path's on the same levels, with half the weight bytes streamed. Twice the chunks are kept in
// flight (hd::kDecodeInt4Unroll) so that a warp has as many bytes outstanding as for INT8.
#include <cuda_fp16.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/decode_device.cuh"
#include "cuda/hd_math.h"
#include "cuda/int4_math.h"
#include "cuda/kernel_params.h"
#include "cuda/l2_prefetch.cuh"
#include "cuda/launch_attrs.h"
#include "cuda/row_cluster_plan.h"

namespace mq::cuda {
namespace {

using namespace decode_dev;  // the loads, dot products, norm, conv step and Hadamard levels (decode_device.cuh)

constexpr int kWarps = hd::kDecodeWarps;
constexpr int kThreads = kWarps * 32;
constexpr int kRows = hd::kDecodeRows;      // output rows per warp task (each activation load feeds both)
constexpr int kMaxHadM = 28;
constexpr int kScanThreads = 128;  // kernel 3: 32 channels × 4 lanes
constexpr int kScanChannels = kScanThreads / 4;
constexpr int64_t kPrefetchTotal = 24ll << 20;  // L2 bytes one kernel may prefetch (L2: 50 MB)

__device__ __forceinline__ void PdlWait() { asm volatile("griddepcontrol.wait;" ::: "memory"); }
__device__ __forceinline__ void PdlLaunchDependents() { asm volatile("griddepcontrol.launch_dependents;" ::: "memory"); }

using GemvPlan = hd::DecodeGemvPlan;  // how one GEMV is spread over blocks and warps (hd_math.h)

__device__ __forceinline__ void BlockTiles(const GemvPlan& g, int64_t* t0, int* n) {
  hd::DecodeBlockTiles(g, blockIdx.x, t0, n);
}

// ld_bytes: bytes of a weight row (a multiple of 16, or of 8 for packed 4-bit rows: the slice's
// ends are rounded down to 16 bytes, within the buffer).
__device__ __forceinline__ void PrefetchSlice(const GemvPlan& g, const void* w, int64_t ld_bytes) {
  int64_t t0;
  int n;
  BlockTiles(g, &t0, &n);
  const int64_t r0 = t0 * kRows;
  const int64_t r1 = (t0 + n) * kRows < g.rows ? (t0 + n) * kRows : g.rows;
  const int64_t b0 = r0 * ld_bytes / 16 * 16, b1 = r1 * ld_bytes / 16 * 16;
  const int64_t bytes = b1 - b0;
  PrefetchL2(static_cast<const uint8_t*>(w) + b0, bytes < g.prefetch_bytes ? bytes : g.prefetch_bytes);
}

// Row pointers of warp task `task` (tile t0 + task / parts): rows past g.rows read row0 but are
// never loaded.
__device__ __forceinline__ void TaskRows(const GemvPlan& g, const uint8_t* w, int64_t ld_bytes, int64_t t0, int task,
                                         const uint8_t* (&wr)[kRows], bool (&ok)[kRows]) {
  const int64_t row0 = (t0 + task / g.parts) * kRows;
#pragma unroll
  for (int r = 0; r < kRows; ++r) {
    ok[r] = row0 + r < g.rows;
    wr[r] = w + (ok[r] ? row0 + r : row0) * ld_bytes;
  }
}

// Chunk c of a row starts at byte c·16 (c·8 packed): the same weights in either format.
template <bool kW4>
__device__ __forceinline__ void LoadChunks(const GemvPlan& g, const uint8_t* const (&wr)[kRows], const bool (&ok)[kRows],
                                           int c0, int stride,
                                           typename WChunk<kW4>::T (&wc)[kRows][WChunk<kW4>::kUnroll]) {
  using W = WChunk<kW4>;
#pragma unroll
  for (int u = 0; u < W::kUnroll; ++u) {
    const int c = c0 + u * stride;
#pragma unroll
    for (int r = 0; r < kRows; ++r) wc[r][u] = (c < g.chunks && ok[r]) ? W::Load(wr[r] + c * W::kBytes) : W::Zero();
  }
}

// The block's tiles against the activations xs ([kB][xs_ld] bytes in shared memory): each warp
// task (tile, part) leaves its per-(row, token) sums in red[(tile·kRows + r)·parts + part][kB].
// Weights do not depend on the previous kernel, so each warp issues its first task's first chunks
// before running `prologue` (which waits for the previous kernel and fills xs, with block
// barriers: every thread calls it): they arrive while the prologue runs. kPreload = false where the
// prologue itself needs the registers (the INT8 Hadamard mix). ld_bytes: bytes of a weight row;
// kW4: packed 4-bit rows (the chunk count g.chunks is that of the INT8 rows).
template <typename Acc, int kB, bool kW4 = false, bool kPreload = true, typename Prologue>
__device__ __forceinline__ void BlockGemv(const GemvPlan& g, const void* wv, int64_t ld_bytes, const uint8_t* xs,
                                          int xs_ld, int B, Acc* red, Prologue prologue) {
  using W = WChunk<kW4>;
  constexpr int kU = W::kUnroll;
  int64_t t0;
  int ntiles;
  BlockTiles(g, &t0, &ntiles);
  const uint8_t* w = static_cast<const uint8_t*>(wv);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int stride = 32 * g.parts;
  const int tasks = ntiles * g.parts;
  const uint8_t* wr[kRows];
  bool ok[kRows];
  typename W::T wc[kRows][kU];
  if (kPreload && warp < tasks) {
    TaskRows(g, w, ld_bytes, t0, warp, wr, ok);
    LoadChunks<kW4>(g, wr, ok, (warp % g.parts) * 32 + lane, stride, wc);
  }
  prologue();
  for (int task = warp; task < tasks; task += kWarps) {
    const int tl = task / g.parts, part = task % g.parts;
    TaskRows(g, w, ld_bytes, t0, task, wr, ok);
    Acc acc[kRows][kB];
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int b = 0; b < kB; ++b) acc[r][b] = 0;
    for (int c0 = part * 32 + lane; c0 < g.chunks; c0 += kU * stride) {
      if (!kPreload || task != warp || c0 != part * 32 + lane) LoadChunks<kW4>(g, wr, ok, c0, stride, wc);
#pragma unroll
      for (int u = 0; u < kU; ++u) {
        const int c = c0 + u * stride;
        if (c >= g.chunks) break;
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          if (b < B) {
            const int4 xv = *reinterpret_cast<const int4*>(xs + b * xs_ld + c * 16);
#pragma unroll
            for (int r = 0; r < kRows; ++r) Dot16(acc[r][b], wc[r][u], xv);
          }
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int b = 0; b < kB; ++b)
        if (b < B) {
#pragma unroll
          for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
        }
    if (lane == 0) {
#pragma unroll
      for (int r = 0; r < kRows; ++r)
#pragma unroll
        for (int b = 0; b < kB; ++b) red[((tl * kRows + r) * g.parts + part) * kB + b] = acc[r][b];
    }
  }
}

// After a barrier: sums the parts in a fixed order and hands (row, row in block, token, sum) to epi, the threads
// running along rows so that the stores coalesce.
template <typename Acc, int kB, typename Epi>
__device__ __forceinline__ void GemvEpilogue(const GemvPlan& g, int B, const Acc* red, Epi epi) {
  int64_t t0;
  int ntiles;
  BlockTiles(g, &t0, &ntiles);
  const int rows_local = ntiles * kRows;
  for (int i = threadIdx.x; i < rows_local * B; i += blockDim.x) {
    const int b = i / rows_local, rl = i % rows_local;
    const int64_t row = t0 * kRows + rl;
    if (row >= g.rows) continue;
    Acc s = red[(rl * g.parts) * kB + b];
    for (int q = 1; q < g.parts; ++q) s += red[(rl * g.parts + q) * kB + b];
    epi(row, rl, b, s);
  }
}


// The dequantization constants of the block's rows (weight scale, bias) in shared memory, loaded
// before the wait so that the epilogue makes no global round trip: s_ws/s_bias [max_tiles·kRows].
__device__ __forceinline__ void LoadRowConsts(const GemvPlan& g, const DecodeLinear& l, float* s_ws, float* s_bias) {
  int64_t t0;
  int n;
  BlockTiles(g, &t0, &n);
  for (int i = threadIdx.x; i < n * kRows; i += blockDim.x) {
    const int64_t row = t0 * kRows + i;
    const bool ok = row < g.rows;
    s_ws[i] = ok && l.wscale != nullptr ? __ldg(l.wscale + row) : 1.0f;
    s_bias[i] = ok && l.bias != nullptr ? __ldg(l.bias + row) : 0.0f;
  }
}

// acc·s_x·s_w + bias (INT8) or acc + bias, the per-stage kernels' order (LoadAct).
template <bool kInt8>
__device__ __forceinline__ float Dequant(std::conditional_t<kInt8, int32_t, float> s, float sx, const float* s_ws,
                                         const float* s_bias, int rl) {
  float v;
  if constexpr (kInt8) v = hd::Dequantize(s, sx, s_ws[rl]);
  else v = s;
  return step_math::Add(v, s_bias[rl]);  // not fused with the product: the CPU rounds it first
}



// u = SiLU(conv) of channel c for token b from the conv state (oldest first) and this step's input x.
__device__ __forceinline__ float ConvU(const DecodeLayerParams& p, int b, int64_t c, float x) {
  const int64_t S = p.K - 1;
  return step_math::ConvStepSilu(p.conv_state + p.slots[b] * p.conv_slot_stride + c * S, p.conv_w + c * p.K, p.conv_b[c],
                                 p.K, x);
}

template <bool kInt8>
constexpr int kElem = kInt8 ? 1 : 2;

// The dynamic shared memory of a GEMV kernel: activations [kB][act_ld bytes], `floats` of scratch,
// the partial sums and the row constants (the layout RedBytes sizes on the host). Construction also
// starts what needs no data from the previous kernel: the weight slice's L2 prefetch (optional) and
// the row constants.
template <bool kInt8, int kB>
struct GemvSmem {
  uint8_t* act;
  float* buf;
  AccT<kInt8>* red;
  float* s_ws;
  float* s_bias;
  __device__ __forceinline__ GemvSmem(uint8_t* smem, const GemvPlan& g, const DecodeLinear& lin, int act_ld,
                                      int64_t w_ld_bytes, int64_t floats, bool prefetch) {
    act = smem;
    buf = reinterpret_cast<float*>(smem + kB * act_ld);
    red = reinterpret_cast<AccT<kInt8>*>(buf + floats);
    s_ws = reinterpret_cast<float*>(red + static_cast<int64_t>(g.max_tiles) * kRows * g.parts * kB);
    s_bias = s_ws + g.max_tiles * kRows;
    if (prefetch) PrefetchSlice(g, lin.w, w_ld_bytes);
    LoadRowConsts(g, lin, s_ws, s_bias);
  }
};

// ---- kernel 1: RMSNorm → in_proj → conv + SiLU (and the LM head) -------------------------------
struct NormGemvArgs {
  int B = 0;
  int64_t d = 0;
  float eps = 0;
  const float* h = nullptr;
  const float* gamma = nullptr;
  DecodeLinear lin;
  float* out = nullptr;
  int64_t ld_out = 0;
  bool prefetch = false;
};

// kConv: rows < E of in_proj are the conv inputs x; the epilogue also runs the conv step of that
// channel (u = SiLU(conv(state, x))) and gathers per-token |u| maxima for x_proj's quantization,
// so that no later kernel needs every channel's conv.
template <bool kInt8, int kB, bool kConv, bool kW4 = false>
__global__ void __launch_bounds__(kThreads, 2) NormGemvKernel(NormGemvArgs a, GemvPlan g, DecodeLayerParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float s_scale[kB];
  __shared__ unsigned int s_umax[kB];
  __shared__ double dscr[32];
  __shared__ float fscr[32];
  const int act_ld = static_cast<int>(a.lin.ld) * kElem<kInt8>;
  const int64_t w_ld = DecodeRowBytes(a.lin.ld, kInt8, kW4);
  const GemvSmem<kInt8, kB> sm(smem, g, a.lin, act_ld, w_ld, 2 * hd::RoundUp(a.d, 4), a.prefetch);
  float* s_gamma = sm.buf + hd::RoundUp(a.d, 4);  // [d]
  if (threadIdx.x < kB) s_umax[threadIdx.x] = 0u;
  LoadRow(a.gamma, nullptr, a.d, s_gamma);  // constants: before the wait
  BlockGemv<AccT<kInt8>, kB, kW4>(g, a.lin.w, w_ld, sm.act, act_ld, a.B, sm.red, [&] {
    PdlWait();
    PdlLaunchDependents();
    for (int b = 0; b < a.B; ++b) {
      const float amax = NormRow<kInt8>(a.h + b * a.d, s_gamma, a.d, a.eps, sm.buf, dscr, fscr);
      StoreAct<kInt8>(sm.buf, a.d, a.lin.ld, amax, a.lin.act_static_scale, sm.act + b * act_ld, &s_scale[b]);
      __syncthreads();  // buf is rewritten for the next token
    }
  });
  __syncthreads();
  GemvEpilogue<AccT<kInt8>, kB>(g, a.B, sm.red, [&](int64_t row, int rl, int b, AccT<kInt8> s) {
    const float v = Dequant<kInt8>(s, s_scale[b], sm.s_ws, sm.s_bias, rl);
    a.out[b * a.ld_out + row] = v;
    if constexpr (kConv) {
      if (row < p.E) {
        const float u = ConvU(p, b, row, v);
        p.u[b * p.E + row] = u;
        if constexpr (kInt8) atomicMax(&s_umax[b], __float_as_uint(fabsf(u)));
      }
    }
  });
  if constexpr (kConv && kInt8) {
    __syncthreads();
    if (threadIdx.x < a.B && s_umax[threadIdx.x] != 0u) atomicMax(p.umax + threadIdx.x, s_umax[threadIdx.x]);
  }
}

// ---- kernel 2: u → x_proj ------------------------------------------------------------------------
template <bool kInt8, int kB, bool kW4 = false>
__global__ void __launch_bounds__(kThreads, 2) ConvXProjKernel(DecodeLayerParams p, GemvPlan g) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float s_scale[kB];
  const DecodeLinear& lin = p.x_proj;
  const int act_ld = static_cast<int>(lin.ld) * kElem<kInt8>;
  const int64_t w_ld = DecodeRowBytes(lin.ld, kInt8, kW4);
  const GemvSmem<kInt8, kB> sm(smem, g, lin, act_ld, w_ld, hd::RoundUp(p.E, 4), p.l2_prefetch);
  BlockGemv<AccT<kInt8>, kB, kW4>(g, lin.w, w_ld, sm.act, act_ld, p.B, sm.red, [&] {
    PdlWait();
    PdlLaunchDependents();
    PrefetchAhead(p.ahead_x);
    for (int b = 0; b < p.B; ++b) {
      LoadRow(p.u + b * p.E, nullptr, p.E, sm.buf);
      __syncthreads();
      const float amax = kInt8 ? __uint_as_float(p.umax[b]) : 0.0f;
      StoreAct<kInt8>(sm.buf, p.E, lin.ld, amax, lin.act_static_scale, sm.act + b * act_ld, &s_scale[b]);
      __syncthreads();
    }
  });
  __syncthreads();
  const int64_t cols = p.R + 2 * p.N;
  GemvEpilogue<AccT<kInt8>, kB>(g, p.B, sm.red, [&](int64_t row, int rl, int b, AccT<kInt8> s) {
    p.dbc[b * cols + row] = Dequant<kInt8>(s, s_scale[b], sm.s_ws, sm.s_bias, rl);
  });
}

// ---- kernel 3: dt_proj + softplus + scan step + gate -------------------------------------------
// Four lanes a channel, four states each; the lanes also split dt_proj's row. The conv state is
// shifted here (kernel 1 read it for this step's conv). Every load that does not depend on the
// previous kernel (dt_proj's row, A, D, the gate scale) is issued before waiting for it.
constexpr int kDtChunksPerLane = 8;  // dt_proj rows up to 4·8 16-byte chunks stay in registers
template <bool kInt8, int kB, bool kW4 = false>
__global__ void __launch_bounds__(kScanThreads) DtScanKernel(DecodeLayerParams p) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float s_scale[kB];
  const DecodeLinear& lin = p.dt_proj;
  const int act_ld = static_cast<int>(lin.ld) * kElem<kInt8>;
  uint8_t* act = smem;                                        // [kB][act_ld]: δ as INT8 or half
  float* rows = reinterpret_cast<float*>(smem + kB * act_ld); // [kB][cols]: δ | B | C
  const int64_t N = p.N, cols = p.R + 2 * N;
  const int64_t c = static_cast<int64_t>(blockIdx.x) * kScanChannels + threadIdx.x / 4;
  const int g = threadIdx.x % 4;
  const bool active = c < p.E;  // E is a multiple of 16: inactive channels fill whole warps
  const int64_t cc = active ? c : 0;
  using W = WChunk<kW4>;
  const uint8_t* wrow = static_cast<const uint8_t*>(lin.w) + cc * DecodeRowBytes(lin.ld, kInt8, kW4);
  const int dt_chunks = act_ld / 16;
  typename W::T wdt[kDtChunksPerLane];
#pragma unroll
  for (int i = 0; i < kDtChunksPerLane; ++i) {
    const int ch = g + 4 * i;
    wdt[i] = ch < dt_chunks ? __ldg(reinterpret_cast<const typename W::T*>(wrow + ch * W::kBytes)) : W::Zero();
  }
  float a2[4];
  {
    const float4 v = __ldg(reinterpret_cast<const float4*>(p.A2 + cc * N + g * 4));
    a2[0] = v.x, a2[1] = v.y, a2[2] = v.z, a2[3] = v.w;
  }
  const float dcoef = __ldg(p.D + cc);
  const float gscale = p.gate_scale != nullptr ? __ldg(p.gate_scale + cc) : 0.0f;
  const float dt_ws = lin.wscale != nullptr ? __ldg(lin.wscale + cc) : 1.0f;
  const float dt_bias = lin.bias != nullptr ? __ldg(lin.bias + cc) : 0.0f;
  // The SSM state was last written by the previous decode step, complete before this one began.
  float4 hv[kB];
#pragma unroll
  for (int b = 0; b < kB; ++b)
    if (b < p.B) hv[b] = *reinterpret_cast<const float4*>(p.ssm_state + p.slots[b] * p.ssm_slot_stride + cc * N + g * 4);
  PdlWait();
  PdlLaunchDependents();
  PrefetchAhead(p.ahead_scan);
  // Stage δ|B|C of every token (all loads of a thread in flight at once), then quantize δ per
  // token (a warp a token).
  for (int64_t i = threadIdx.x; i < p.B * cols; i += kLoadsInFlight * blockDim.x) {
    float v[kLoadsInFlight];
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      const int64_t k = i + static_cast<int64_t>(u) * blockDim.x;
      if (k < p.B * cols) v[u] = p.dbc[k];
    }
#pragma unroll
    for (int u = 0; u < kLoadsInFlight; ++u) {
      const int64_t k = i + static_cast<int64_t>(u) * blockDim.x;
      if (k < p.B * cols) rows[k] = v[u];
    }
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  for (int b = warp; b < p.B; b += kScanThreads / 32) {
    const float* row = rows + b * cols;
    if constexpr (kInt8) {
      float amax = 0.0f;
      for (int64_t i = lane; i < p.R; i += 32) amax = fmaxf(amax, fabsf(row[i]));
      amax = WarpMax(amax);
      const float s = lin.act_static_scale > 0.0f ? lin.act_static_scale : hd::ScaleFromAbsMax(amax);
      const float inv = 1.0f / s;
      int8_t* q = reinterpret_cast<int8_t*>(act + b * act_ld);
      for (int64_t i = lane; i < lin.ld; i += 32) q[i] = i < p.R ? hd::QuantizeValue(row[i], inv) : 0;
      if (lane == 0) s_scale[b] = s;
    } else {
      __half* q = reinterpret_cast<__half*>(act + b * act_ld);
      for (int64_t i = lane; i < lin.ld; i += 32) q[i] = __float2half_rn(i < p.R ? row[i] : 0.0f);
    }
  }
  __syncthreads();
  // Kernel 2 has read the |u| maxima; the next layer's kernel 1 gathers them afresh.
  if (blockIdx.x == 0 && threadIdx.x < p.B) p.umax[threadIdx.x] = 0u;
  if (!active) return;
  const int64_t S = p.K - 1;
#pragma unroll
  for (int b = 0; b < kB; ++b) {
    if (b >= p.B) break;
    const int32_t slot = p.slots[b];
    float* hs = p.ssm_state + slot * p.ssm_slot_stride + c * N + g * 4;
    const float u = p.u[b * p.E + c];
    const float z = p.xz[b * 2 * p.E + p.E + c];
    const float x = p.xz[b * 2 * p.E + c];
    AccT<kInt8> acc = 0;
#pragma unroll
    for (int i = 0; i < kDtChunksPerLane; ++i) {
      const int ch = g + 4 * i;
      if (ch < dt_chunks) Dot16(acc, wdt[i], *reinterpret_cast<const int4*>(act + b * act_ld + ch * 16));
    }
    for (int ch = g + 4 * kDtChunksPerLane; ch < dt_chunks; ch += 4)  // longer rows than any Mamba-1 size
      Dot16(acc, __ldg(reinterpret_cast<const typename W::T*>(wrow + ch * W::kBytes)),
            *reinterpret_cast<const int4*>(act + b * act_ld + ch * 16));
    acc += __shfl_xor_sync(0xffffffffu, acc, 2);
    acc += __shfl_xor_sync(0xffffffffu, acc, 1);
    float dtl;
    if constexpr (kInt8) dtl = hd::Dequantize(acc, s_scale[b], dt_ws);
    else dtl = acc;
    // The CPU reference's arithmetic bit for bit (model/step_math.h): a decode step of a quantized
    // model then gives the same INT8 codes, state and y on both.
    const float dt = step_math::Softplus(step_math::Add(dtl, dt_bias));
    const float gate = p.gate_scale != nullptr ? step_math::SmoothSilu(z, gscale) : step_math::Silu(z);
    float h[4] = {hv[b].x, hv[b].y, hv[b].z, hv[b].w};
    const float* bc = rows + b * cols + p.R;
    const float yv = ScanStepExact4(h, a2, dt, dt * u, bc + g * 4, bc + N + g * 4, dcoef, u, gate);
    *reinterpret_cast<float4*>(hs) = make_float4(h[0], h[1], h[2], h[3]);
    if (g == 0) {
      p.y[b * p.E + c] = yv;
      float* st = p.conv_state + slot * p.conv_slot_stride + c * S;
      for (int64_t s = 0; s + 1 < S; ++s) st[s] = st[s + 1];
      st[S - 1] = x;
    }
  }
}

// ---- kernel 4: [R2 Hadamard] → out_proj → residual ---------------------------------------------

// 4a (INT8): y[b] → R2 Hadamard → per-token INT8 into yq[b], ys[b]; one wide block a token. Its
// blocks let kernel 4b start at once, so out_proj's weights stream in while the transform runs.
constexpr int kHadThreads = 1024;
__global__ void __launch_bounds__(kHadThreads) HadamardActKernel(DecodeLayerParams p, int log2_half) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float fscr[32];
  __shared__ uint32_t s_neg[kMaxHadM];
  const int64_t E = p.E;
  const int b = blockIdx.x;
  const int m = p.had_m;
  const int P = static_cast<int>(p.had_p);
  float* sx = reinterpret_cast<float*>(smem);  // [E] transform, then [E] mix output
  float* sy = sx + hd::RoundUp(E, 4);
  if (threadIdx.x < m) s_neg[threadIdx.x] = p.had_neg != nullptr ? __ldg(p.had_neg + threadIdx.x) : 0u;
  PdlLaunchDependents();
  PdlWait();
  LoadRow<2>(p.y + b * E, p.had_scale, E, sx);
  __syncthreads();
  const float* res = sx;
  if (p.had_scale != nullptr) {
    switch (P) {
      case 32: WarpHadamardChunks<1>(sx, m); break;
      case 64: WarpHadamardChunks<2>(sx, m); break;
      case 128: WarpHadamardChunks<4>(sx, m); break;
      case 256: WarpHadamardChunks<8>(sx, m); break;
      default: BlockHadamardChunks(sx, E, P, log2_half);
    }
    __syncthreads();
    if (m > 1) {
      // ±1 mix across chunks: out[o·P + j] = Σ_i ±x[i·P + j], i ascending from ±x[j] as
      // hd::MixOutput adds them; a thread an output.
      for (int64_t k = threadIdx.x; k < E; k += blockDim.x) {
        sy[k] = hd::MixOutputMasked(sx, s_neg[k / P], m, P, static_cast<int>(k % P));
      }
      res = sy;
      __syncthreads();
    }
  }
  float amax = 0.0f;
  for (int64_t i = threadIdx.x; i < E; i += blockDim.x) amax = fmaxf(amax, fabsf(res[i]));
  amax = BlockMax(amax, fscr);
  const DecodeLinear& lin = p.out_proj;
  const float s = lin.act_static_scale > 0.0f ? lin.act_static_scale : hd::ScaleFromAbsMax(amax);
  const float inv = 1.0f / s;
  int8_t* q = p.yq + b * lin.ld;
  for (int64_t c = threadIdx.x; c < lin.ld; c += blockDim.x) q[c] = c < E ? hd::QuantizeValue(res[c], inv) : 0;
  if (threadIdx.x == 0) p.ys[b] = s;
}

// 4b: out_proj of y (FP16: y → half here; INT8: the codes of kernel 4a) → h += ·.
template <bool kInt8, int kB, bool kW4 = false>
__global__ void __launch_bounds__(kThreads, 2) OutProjKernel(DecodeLayerParams p, GemvPlan g) {
  extern __shared__ __align__(16) uint8_t smem[];
  __shared__ float s_scale[kB];
  const DecodeLinear& lin = p.out_proj;
  const int act_ld = static_cast<int>(lin.ld) * kElem<kInt8>;
  const int64_t E = p.E;
  const int64_t w_ld = DecodeRowBytes(lin.ld, kInt8, kW4);
  const GemvSmem<kInt8, kB> sm(smem, g, lin, act_ld, w_ld, kInt8 ? 0 : hd::RoundUp(E, 4), p.l2_prefetch);
  BlockGemv<AccT<kInt8>, kB, kW4>(g, lin.w, w_ld, sm.act, act_ld, p.B, sm.red, [&] {
    PdlWait();
    PdlLaunchDependents();
    if constexpr (kInt8) {
      // B rows of act_ld bytes (a multiple of 16), 16 bytes a thread.
      const int4* src = reinterpret_cast<const int4*>(p.yq);
      int4* dst = reinterpret_cast<int4*>(sm.act);
      for (int i = threadIdx.x; i < p.B * act_ld / 16; i += blockDim.x) dst[i] = src[i];
      if (threadIdx.x < p.B) s_scale[threadIdx.x] = p.ys[threadIdx.x];
    } else {
      for (int b = 0; b < p.B; ++b) {
        LoadRow(p.y + b * E, nullptr, E, sm.buf);
        __syncthreads();
        StoreAct<false>(sm.buf, E, lin.ld, 0.0f, 0.0f, sm.act + b * act_ld, nullptr);
        __syncthreads();
      }
    }
    __syncthreads();
  });
  __syncthreads();
  GemvEpilogue<AccT<kInt8>, kB>(g, p.B, sm.red, [&](int64_t row, int rl, int b, AccT<kInt8> s) {
    p.h[b * p.d + row] = step_math::Add(p.h[b * p.d + row], Dequant<kInt8>(s, s_scale[b], sm.s_ws, sm.s_bias, rl));
  });
}

// ---- host side ---------------------------------------------------------------------------------

// Raises a kernel's dynamic shared memory limit once (needed above 48 KB) and returns how many of
// its blocks fit on one SM with that much.
StatusOr<int> PrepareKernel(const void* fn, int threads, size_t smem) {
  static std::mutex mu;
  static std::map<std::pair<const void*, size_t>, int> known;
  std::lock_guard<std::mutex> lock(mu);
  const auto key = std::make_pair(fn, smem);
  if (auto it = known.find(key); it != known.end()) return it->second;
  if (smem > 48 * 1024)
    MQ_CUDA_RETURN_IF_ERROR(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  int blocks = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fn, threads, smem));
  if (blocks < 1) return ResourceExhaustedError("decode kernel does not fit on an SM (shared memory " + std::to_string(smem) + " B)");
  known.emplace(key, blocks);
  return blocks;
}

GemvPlan MakePlan(int64_t rows, int64_t ld_bytes, int64_t max_blocks) {
  return hd::MakeDecodeGemvPlan(rows, ld_bytes, max_blocks, kPrefetchTotal);
}

// Shared memory of a GEMV's partial sums (red) and its row constants (RowConsts).
size_t RedBytes(const GemvPlan& g, int kB) {
  return static_cast<size_t>(g.max_tiles) * kRows * (g.parts * kB + 2) * 4;
}

template <typename Kernel, typename... Args>
Status LaunchEx(Kernel kernel, int grid, int threads, size_t smem, bool pdl, cudaStream_t stream, Args... args) {
  MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(kernel, dim3(static_cast<unsigned>(grid)), dim3(static_cast<unsigned>(threads)),
                                         smem, /*cluster=*/0, pdl, stream, args...));
  return OkStatus();
}

// Plans a GEMV kernel for two blocks per SM (so that the next kernel's blocks find room to start
// early), or one where its shared memory allows no more. Returns the plan and the shared memory.
StatusOr<std::pair<GemvPlan, size_t>> PlanGemv(const void* fn, int64_t rows, int64_t ld_bytes, size_t smem_fixed,
                                              int kB) {
  for (int per_sm = 2;; --per_sm) {
    const GemvPlan g = MakePlan(rows, ld_bytes, static_cast<int64_t>(per_sm) * DeviceSmCount());
    const size_t smem = smem_fixed + RedBytes(g, kB);
    MQ_ASSIGN_OR_RETURN(int fit, PrepareKernel(fn, kThreads, smem));
    if (fit >= per_sm || per_sm == 1) return std::make_pair(g, smem);
  }
}

template <bool kInt8, int kB, bool kConv, bool kW4 = false>
Status LaunchNormGemv(const NormGemvArgs& a, const DecodeLayerParams& p, bool pdl, cudaStream_t stream) {
  const auto kernel = NormGemvKernel<kInt8, kB, kConv, kW4>;
  const int64_t act_ld = a.lin.ld * kElem<kInt8>;
  MQ_ASSIGN_OR_RETURN(auto plan, PlanGemv(reinterpret_cast<const void*>(kernel), a.lin.out, act_ld,
                                          kB * act_ld + 2 * hd::RoundUp(a.d, 4) * 4, kB));
  return LaunchEx(kernel, plan.first.grid, kThreads, plan.second, pdl, stream, a, plan.first, p);
}

// kW4 (with kInt8): the linears' weights are packed 4-bit; the plans are those of the INT8 rows.
template <bool kInt8, int kB, bool kW4 = false>
Status LaunchLayer(const DecodeLayerParams& p, cudaStream_t stream) {
  // 1: norm → in_proj
  NormGemvArgs a;
  a.B = p.B, a.d = p.d, a.eps = p.eps, a.h = p.h, a.gamma = p.norm, a.lin = p.in_proj, a.out = p.xz;
  a.ld_out = 2 * p.E, a.prefetch = p.l2_prefetch;
  MQ_RETURN_IF_ERROR((LaunchNormGemv<kInt8, kB, true, kW4>(a, p, p.pdl, stream)));
  // 2: conv → x_proj. Up to a block an SM (in practice a block a 2-row tile: 96 on 2.8b), each
  // quantizing all of u for itself: the H100 measured 2.8b INT8 b1 2.59 → 2.49 ms and FP16
  // 2.88 → 2.81 against a 64-block grid; 264 blocks gave the same as 132.
  {
    const auto kernel = ConvXProjKernel<kInt8, kB, kW4>;
    const int64_t act_ld = p.x_proj.ld * kElem<kInt8>;
    const GemvPlan g = MakePlan(p.x_proj.out, act_ld, DeviceSmCount());
    const size_t smem = kB * act_ld + hd::RoundUp(p.E, 4) * 4 + RedBytes(g, kB);
    MQ_RETURN_IF_ERROR(PrepareKernel(reinterpret_cast<const void*>(kernel), kThreads, smem).status());
    MQ_RETURN_IF_ERROR(LaunchEx(kernel, g.grid, kThreads, smem, p.pdl, stream, p, g));
  }
  // 3: dt_proj → scan → gate
  {
    const auto kernel = DtScanKernel<kInt8, kB, kW4>;
    const size_t smem = kB * p.dt_proj.ld * kElem<kInt8> + kB * (p.R + 2 * p.N) * 4;
    MQ_RETURN_IF_ERROR(PrepareKernel(reinterpret_cast<const void*>(kernel), kScanThreads, smem).status());
    const int grid = static_cast<int>((p.E + kScanChannels - 1) / kScanChannels);
    MQ_RETURN_IF_ERROR(LaunchEx(kernel, grid, kScanThreads, smem, p.pdl, stream, p));
  }
  // 4a (INT8): Hadamard → INT8 codes; 4b: out_proj → residual
  if constexpr (kInt8) {
    if (p.had_scale != nullptr && (p.had_m == 1 || p.had_mix != nullptr) && RowClustersEnabled() &&
        p.E >= hd::kLayerHadamardClusterMinRow) {
      // One cluster a token (hadamard_kernel.cu): the row's transform split over its blocks.
      HadamardQuantParams hp;
      hp.x = p.y, hp.tokens = p.B, hp.n = p.E, hp.m = p.had_m, hp.p = p.had_p;
      hp.scale = p.had_scale, hp.mix = p.had_mix;
      hp.quant = QuantOut{p.yq, p.out_proj.ld, p.ys, p.out_proj.act_static_scale};
      hp.pdl = p.pdl;
      MQ_RETURN_IF_ERROR(LaunchHadamardQuant(hp, stream));
    } else {
      const auto kernel = HadamardActKernel;
      const size_t smem = 2 * hd::RoundUp(p.E, 4) * 4;
      MQ_RETURN_IF_ERROR(PrepareKernel(reinterpret_cast<const void*>(kernel), kHadThreads, smem).status());
      int log2_half = 0;
      while ((int64_t{2} << log2_half) < p.had_p) ++log2_half;
      MQ_RETURN_IF_ERROR(LaunchEx(kernel, p.B, kHadThreads, smem, p.pdl, stream, p, log2_half));
    }
  }
  {
    const auto kernel = OutProjKernel<kInt8, kB, kW4>;
    const int64_t act_ld = p.out_proj.ld * kElem<kInt8>;
    const size_t extra = kInt8 ? 0 : hd::RoundUp(p.E, 4) * 4;
    MQ_ASSIGN_OR_RETURN(auto plan, PlanGemv(reinterpret_cast<const void*>(kernel), p.out_proj.out, act_ld,
                                            kB * act_ld + extra, kB));
    MQ_RETURN_IF_ERROR(LaunchEx(kernel, plan.first.grid, kThreads, plan.second, p.pdl, stream, p, plan.first));
  }
  return OkStatus();
}

}  // namespace

Status LaunchDecodeLayer(const DecodeLayerParams& p, cudaStream_t stream) {
  if (p.B < 1 || p.B > kDecodeMaxBatch) return InvalidArgumentError("decode kernels: batch must be in [1, 8]");
  if (p.N != 16 || p.K < 2 || p.E % 16 != 0 || p.d % 4 != 0)
    return UnimplementedError("decode kernels: need state 16, conv kernel ≥ 2, d_inner % 16 == 0");
  if (p.had_scale != nullptr && (p.had_m > kMaxHadM || p.had_m * p.had_p != p.E || (p.had_p & (p.had_p - 1)) != 0))
    return InvalidArgumentError("decode kernels: online Hadamard must be m·2^k = d_inner with m ≤ 28");
  if (p.had_scale != nullptr && !p.int8) return InvalidArgumentError("decode kernels: online Hadamard needs INT8");
  if (p.u == nullptr || (p.int8 && (p.umax == nullptr || p.yq == nullptr || p.ys == nullptr)))
    return InvalidArgumentError("decode kernels: missing work buffers");
  if (p.int4) {
    if (!p.int8) return InvalidArgumentError("decode kernels: packed 4-bit weights need INT8 activations (W4A8)");
    for (const DecodeLinear* l : {&p.in_proj, &p.x_proj, &p.dt_proj, &p.out_proj})
      if (l->ld % 16 != 0 || reinterpret_cast<uintptr_t>(l->w) % 16 != 0)
        return InvalidArgumentError("decode kernels: packed 4-bit rows must be padded to 16 elements and 16-byte aligned");
  }
  if (DeviceSmCount() < 1) return UnavailableError("decode kernels: no CUDA device");
  if (p.int4) {
    if (p.B == 1) return LaunchLayer<true, 1, true>(p, stream);
    if (p.B == 2) return LaunchLayer<true, 2, true>(p, stream);
    if (p.B <= 4) return LaunchLayer<true, 4, true>(p, stream);
    return LaunchLayer<true, 8, true>(p, stream);
  }
  if (p.int8) {
    if (p.B == 1) return LaunchLayer<true, 1>(p, stream);
    if (p.B == 2) return LaunchLayer<true, 2>(p, stream);
    if (p.B <= 4) return LaunchLayer<true, 4>(p, stream);
    return LaunchLayer<true, 8>(p, stream);
  }
  if (p.B == 1) return LaunchLayer<false, 1>(p, stream);
  if (p.B == 2) return LaunchLayer<false, 2>(p, stream);
  if (p.B <= 4) return LaunchLayer<false, 4>(p, stream);
  return LaunchLayer<false, 8>(p, stream);
}

Status LaunchDecodeLmHead(const DecodeLmHeadParams& p, cudaStream_t stream) {
  if (p.B < 1 || p.B > kDecodeMaxBatch) return InvalidArgumentError("decode LM head: batch must be in [1, 8]");
  if (DeviceSmCount() < 1) return UnavailableError("decode kernels: no CUDA device");
  NormGemvArgs a;
  a.B = p.B, a.d = p.d, a.eps = p.eps, a.h = p.h, a.gamma = p.norm_f, a.lin = p.head, a.out = p.logits;
  a.ld_out = p.ld_logits, a.prefetch = p.l2_prefetch;
  if (p.B == 1) return LaunchNormGemv<false, 1, false>(a, DecodeLayerParams{}, p.pdl, stream);
  if (p.B == 2) return LaunchNormGemv<false, 2, false>(a, DecodeLayerParams{}, p.pdl, stream);
  if (p.B <= 4) return LaunchNormGemv<false, 4, false>(a, DecodeLayerParams{}, p.pdl, stream);
  return LaunchNormGemv<false, 8, false>(a, DecodeLayerParams{}, p.pdl, stream);
}

}  // namespace mq::cuda
