// The INT8 decode step of every layer in one persistent kernel (B ≤ 8 tokens).
//
// At decode a layer is ~10 small dependent steps; as separate launches each costs a few
// microseconds of launch and single-block latency, which is most of the step (docs/benchmarks.md).
// Here all blocks stay resident and meet at grid-wide barriers between the phases that need a
// whole vector of the previous one:
//   P1 residual add + RMSNorm + INT8 (every block, redundantly, all tokens at once, into shared memory)
//   P2 in_proj GEMV → xz (dequantized)                                   | barrier
//   P3 conv + SiLU + state shift, |u| maxima                             | barrier
//   P4 x_proj GEMV (two rows a block, k split over 8 warps each) → δ|B|C | barrier
//   P5 dt_proj GEMV + softplus + scan step + gate → y (half a warp a channel) | barrier
//   P6 R2 Hadamard + INT8 of y: B ≤ 2 every block for itself (no barrier), else one block a
//      token | barrier; out_proj's weights are prefetched into L2 from P5 on
//   P7 out_proj GEMV → o (next in_proj prefetched into L2)               | barrier
// then the final norm into half rows for the LM head. Arithmetic is the unfused kernels'
// (hd_math.h), so results match them up to float summation order.
#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/hd_math.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kWarps = 16;  // one 512-thread block per SM
constexpr int kThreads = kWarps * 32;
constexpr int kB = kFusedMaxBatch;

__device__ __forceinline__ int4 LdStream(const int8_t* p) {
  int4 v;
  asm("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}
__device__ __forceinline__ void PrefetchL2(const void* p) { asm volatile("prefetch.global.L2 [%0];" ::"l"(p)); }

// Grid-wide barrier (all blocks co-resident): arrival counter + generation.
__device__ __forceinline__ void GridBarrier(unsigned int* bar) {
  __syncthreads();
  if (threadIdx.x == 0) {
    volatile unsigned int* vgen = bar + 1;
    const unsigned int gen = *vgen;
    __threadfence();
    if (atomicAdd(bar, 1u) == gridDim.x - 1) {
      atomicExch(bar, 0u);
      __threadfence();
      atomicAdd(bar + 1, 1u);
    } else {
      // A barrier that never opens means blocks were not co-resident: fail loudly, never hang.
      long long spins = 0;
      while (*vgen == gen)
        if (++spins > (1ll << 30)) __trap();
    }
    __threadfence();
  }
  __syncthreads();
}

// acc[r][b] = Σ w[row0 + r]·x[b] over 16-byte chunks c = begin + lane + i·stride (i ≥ 0, c < chunks),
// x in shared memory (row b at x + b·ldx); rows past `rows` give 0. kR rows per pass share each x
// load. Reduced over the warp: every lane gets the sums.
template <int kR>
__device__ __forceinline__ void WarpRowsDot(const int8_t* w, int64_t ldw, int row0, int rows, int chunks, int begin,
                                            int stride, const int8_t* x, int ldx, int B, int32_t (&acc)[kR][kB]) {
  const int lane = threadIdx.x & 31;
  constexpr int kU = 4 / kR;  // chunks in flight per row
  const int8_t* wr[kR];
  bool ok[kR];
#pragma unroll
  for (int r = 0; r < kR; ++r) {
    ok[r] = row0 + r < rows;
    wr[r] = w + static_cast<int64_t>(ok[r] ? row0 + r : row0) * ldw;
#pragma unroll
    for (int b = 0; b < kB; ++b) acc[r][b] = 0;
  }
  for (int c0 = begin + lane; c0 < chunks; c0 += kU * stride) {
    int4 wv[kR][kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * stride;
#pragma unroll
      for (int r = 0; r < kR; ++r) wv[r][u] = (c < chunks && ok[r]) ? LdStream(wr[r] + c * 16) : make_int4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int c = c0 + u * stride;
      if (c >= chunks) break;
#pragma unroll
      for (int b = 0; b < kB; ++b) {
        if (b < B) {
          const int4 xv = *reinterpret_cast<const int4*>(x + b * ldx + c * 16);
#pragma unroll
          for (int r = 0; r < kR; ++r) {
            acc[r][b] = hd::Dp4a(wv[r][u].x, xv.x, acc[r][b]);
            acc[r][b] = hd::Dp4a(wv[r][u].y, xv.y, acc[r][b]);
            acc[r][b] = hd::Dp4a(wv[r][u].z, xv.z, acc[r][b]);
            acc[r][b] = hd::Dp4a(wv[r][u].w, xv.w, acc[r][b]);
          }
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kR; ++r)
#pragma unroll
    for (int b = 0; b < kB; ++b)
      if (b < B)
        for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(0xffffffffu, acc[r][b], o);
}

// Block-wide sums / maxima of B values at once (two barriers for all of them).
__device__ __forceinline__ void BlockSumMulti(double (&v)[kB], int B, double (*scratch)[32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int b = 0; b < kB; ++b)
    if (b < B) {
      v[b] = WarpSum(v[b]);
      if (lane == 0) scratch[b][warp] = v[b];
    }
  __syncthreads();
#pragma unroll
  for (int b = 0; b < kB; ++b)
    if (b < B) v[b] = WarpSum(lane < nw ? scratch[b][lane] : 0.0);
  __syncthreads();
}
__device__ __forceinline__ void BlockMaxMulti(float (&v)[kB], int B, float (*scratch)[32]) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
#pragma unroll
  for (int b = 0; b < kB; ++b)
    if (b < B) {
      v[b] = WarpMax(v[b]);
      if (lane == 0) scratch[b][warp] = v[b];
    }
  __syncthreads();
#pragma unroll
  for (int b = 0; b < kB; ++b)
    if (b < B) v[b] = WarpMax(lane < nw ? scratch[b][lane] : 0.0f);
  __syncthreads();
}

// y (E floats, global) → x·H̃ (R2) → INT8 into q[0, Ep) with scale *sq, using sx, sy (E floats
// each, shared) and the mix in shared memory. Every thread of the block takes part.
__device__ __forceinline__ void HadamardQuantToken(const float* y, const FusedLayer& L, const int8_t* s_mix, int E,
                                                   int Ep, float* sx, float* sy, int8_t* q, float* sq,
                                                   float* fscratch) {
  const int tid = threadIdx.x;
  const float* result = sx;
  for (int c0 = tid; c0 < E; c0 += 8 * blockDim.x) {
    float v[8];
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      const int c = c0 + k * blockDim.x;
      v[k] = c < E ? __ldcg(y + c) * (L.had_scale != nullptr ? L.had_scale[c] : 1.0f) : 0.0f;
    }
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c0 + k * static_cast<int>(blockDim.x) < E) sx[c0 + k * blockDim.x] = v[k];
  }
  __syncthreads();
  if (L.had_scale != nullptr) {
    for (int h = 1; h < L.had_p; h <<= 1) {
      for (int i = tid; i < E / 2; i += blockDim.x) {
        const int lo = hd::ButterflyLow(i, h, L.had_p, L.had_log2_half);
        const float a = sx[lo], bb = sx[lo + h];
        sx[lo] = a + bb;
        sx[lo + h] = a - bb;
      }
      __syncthreads();
    }
    if (L.had_m > 1) {
#pragma unroll 4
      for (int i = tid; i < E; i += blockDim.x) sy[i] = hd::MixOutput(sx, s_mix, L.had_m, L.had_p, i / L.had_p, i % L.had_p);
      __syncthreads();
      result = sy;
    }
  }
  float amax = 0.0f;
  for (int c = tid; c < E; c += blockDim.x) amax = fmaxf(amax, fabsf(result[c]));
  amax = BlockMax(amax, fscratch);
  const float s = L.a_out > 0.0f ? L.a_out : hd::ScaleFromAbsMax(amax);
  const float qinv = 1.0f / s;
  for (int c = tid; c < Ep; c += blockDim.x) q[c] = c < E ? hd::QuantizeValue(result[c], qinv) : 0;
  if (tid == 0) *sq = s;
  __syncthreads();
}

__global__ void __launch_bounds__(kThreads, 1) FusedDecodeKernel(FusedDecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int kmax = max(p.dp, p.Ep);
  int8_t* xq = reinterpret_cast<int8_t*>(smem);                       // [B][kmax]
  float* sf = reinterpret_cast<float*>(smem + hd::RoundUp(static_cast<int64_t>(p.B) * kmax, 16));  // [max(B·d, 2E)]
  __shared__ float s_sx[kB];
  __shared__ float fscratch[32];
  __shared__ float fscratch_m[kB][32];
  __shared__ double dscratch_m[kB][32];
  __shared__ int32_t s_part[kWarps][kB];
  __shared__ int8_t s_mix[28 * 28];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int gw = blockIdx.x * kWarps + warp, nw = gridDim.x * kWarps;
  const int B = p.B, d = p.d, E = p.E, N = p.N, R = p.R, K = p.K, S = K - 1;
  const int Rx = R + 2 * N;

  const bool prof = p.phase_cycles != nullptr && blockIdx.x == 0 && tid == 0;
  long long t_prev = prof ? clock64() : 0;
  auto mark = [&](int k) {
    if (prof) {
      const long long t = clock64();
      p.phase_cycles[k] += static_cast<unsigned long long>(t - t_prev);
      t_prev = t;
    }
  };
  __shared__ FusedLayer s_layer;
  for (int l = 0; l < p.num_layers; ++l) {
    // The layer's pointer table in shared memory: reads from it are cheap and, unlike reads
    // through a global pointer, never have to be repeated after the phases' global stores.
    __syncthreads();
    if (tid == 0) s_layer = p.layers[l];
    __syncthreads();
    const FusedLayer& L = s_layer;
    const float* hin = (l & 1) ? p.h1 : p.h0;
    float* hout = (l & 1) ? p.h0 : p.h1;
    // ---- P1: residual add + RMSNorm + INT8 into shared memory (every block, all tokens at once) --
    if (blockIdx.x == 0 && tid < B) p.umax[tid] = 0u;
    for (int i = tid; i < L.had_m * L.had_m; i += kThreads) s_mix[i] = L.had_mix != nullptr ? L.had_mix[i] : 1;
    {
      double ss[kB];
#pragma unroll
      for (int b = 0; b < kB; ++b) ss[b] = 0.0;
      // Loads first, stores after: a store waits for its value, and in-order issue would otherwise
      // hold the next load behind it (one memory latency per element).
      for (int c0 = tid; c0 < d; c0 += 2 * kThreads) {
        float v[2][kB];
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int c = c0 + k * kThreads;
#pragma unroll
          for (int b = 0; b < kB; ++b) {
            v[k][b] = 0.0f;
            if (b < B && c < d)
              v[k][b] = l == 0 ? __ldg(p.embeddings + static_cast<int64_t>(__ldg(p.ids + b)) * d + c)
                               : __ldcg(hin + b * d + c) + __ldcg(p.o + b * d + c);
          }
        }
#pragma unroll
        for (int k = 0; k < 2; ++k) {
          const int c = c0 + k * kThreads;
#pragma unroll
          for (int b = 0; b < kB; ++b) {
            if (b < B && c < d) {
              if (blockIdx.x == 0) hout[b * d + c] = v[k][b];
              sf[b * d + c] = v[k][b];
              ss[b] += static_cast<double>(v[k][b]) * v[k][b];
            }
          }
        }
      }
      BlockSumMulti(ss, B, dscratch_m);
      float inv[kB], am[kB];
#pragma unroll
      for (int b = 0; b < kB; ++b) {
        inv[b] = b < B ? static_cast<float>(1.0 / sqrt(ss[b] / static_cast<double>(d) + static_cast<double>(p.eps))) : 0.0f;
        am[b] = 0.0f;
      }
      for (int c = tid; c < d; c += kThreads) {
        const float g = L.norm[c];
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          if (b < B) {
            const float v = g * (sf[b * d + c] * inv[b]);
            sf[b * d + c] = v;
            am[b] = fmaxf(am[b], fabsf(v));
          }
        }
      }
      BlockMaxMulti(am, B, fscratch_m);
#pragma unroll
      for (int b = 0; b < kB; ++b) {
        if (b < B) {
          const float sc = L.a_in > 0.0f ? L.a_in : hd::ScaleFromAbsMax(am[b]);
          const float qinv = 1.0f / sc;
          for (int c = tid; c < p.dp; c += kThreads) xq[b * kmax + c] = c < d ? hd::QuantizeValue(sf[b * d + c], qinv) : 0;
          if (tid == 0) s_sx[b] = sc;
        }
      }
      __syncthreads();
    }
    mark(0);
    // ---- P2: in_proj → xz ----------------------------------------------------------------------
    {
      int32_t acc[2][kB];
      for (int row = 2 * gw; row < 2 * E; row += 2 * nw) {
        WarpRowsDot<2>(L.w_in, p.dp, row, 2 * E, p.dp / 16, 0, 32, xq, kmax, B, acc);
        if (lane < B) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            if (row + r >= 2 * E) break;
            float v = 0.0f;
#pragma unroll
            for (int b = 0; b < kB; ++b)
              if (b == lane) v = hd::Dequantize(acc[r][b], s_sx[b], L.s_in[row + r]);
            if (L.b_in != nullptr) v += L.b_in[row + r];
            p.xz[lane * 2 * E + row + r] = v;
          }
        }
      }
    }
    mark(1);
    GridBarrier(p.barrier);
    mark(2);
    // ---- P3: conv + SiLU + state shift; per-token |u| maxima ----------------------------------
    for (int idx = blockIdx.x * kThreads + tid; idx < B * E; idx += gridDim.x * kThreads) {
      const int b = idx / E, c = idx % E;
      float* st = p.conv_state + (static_cast<int64_t>(p.slots[b]) * p.num_layers + l) * E * S + c * S;
      float window[8];
      float acc = L.conv_b[c];
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        if (k < K) {
          window[k] = k < S ? st[k] : __ldcg(p.xz + b * 2 * E + c);
          acc += L.conv_w[c * K + k] * window[k];
        }
      }
#pragma unroll
      for (int k = 0; k < 7; ++k)
        if (k < S) st[k] = window[k + 1];
      const float u = hd::Silu(acc);
      p.u[b * E + c] = u;
      const float m = WarpMax(fabsf(u));  // E % 32 == 0: a warp never straddles two tokens
      if (lane == 0) atomicMax(p.umax + b, __float_as_uint(m));
    }
    // Meanwhile warm L2 with the small x_proj and dt_proj weights.
    if (p.prefetch)
    for (int64_t off = (static_cast<int64_t>(blockIdx.x) * kThreads + tid) * 128; off < static_cast<int64_t>(Rx) * p.Ep;
         off += static_cast<int64_t>(gridDim.x) * kThreads * 128)
      PrefetchL2(L.w_x + off);
    mark(3);
    GridBarrier(p.barrier);
    mark(4);
    // ---- P4: x_proj (two rows per block, k split over 8 warps each) → δ|B|C -------------------
    if (2 * blockIdx.x < Rx) {
      __shared__ float s_inv[kB];
      if (tid < B) {
        const float sc = L.a_x > 0.0f ? L.a_x : hd::ScaleFromAbsMax(__uint_as_float(__ldcg(p.umax + tid)));
        s_sx[tid] = sc;
        s_inv[tid] = 1.0f / sc;
      }
      __syncthreads();
      for (int i0 = tid; i0 < B * p.Ep; i0 += 8 * kThreads) {
        float v[8];
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const int i = i0 + k * kThreads, b = i / p.Ep, c = i % p.Ep;
          v[k] = (i < B * p.Ep && c < E) ? __ldcg(p.u + b * E + c) : 0.0f;
        }
#pragma unroll
        for (int k = 0; k < 8; ++k) {
          const int i = i0 + k * kThreads, b = i / p.Ep, c = i % p.Ep;
          if (i < B * p.Ep) xq[b * kmax + c] = c < E ? hd::QuantizeValue(v[k], s_inv[b]) : 0;
        }
      }
      __syncthreads();
      const int half = warp / (kWarps / 2), hw = warp % (kWarps / 2);
      for (int row0 = 2 * blockIdx.x; row0 < Rx; row0 += 2 * gridDim.x) {
        const int row = row0 + half;
        int32_t acc[1][kB];
        WarpRowsDot<1>(L.w_x, p.Ep, row, Rx, p.Ep / 16, hw * 32, (kWarps / 2) * 32, xq, kmax, B, acc);
        if (lane == 0)
          for (int b = 0; b < B; ++b) s_part[warp][b] = acc[0][b];
        __syncthreads();
        if (tid < 2 * B) {
          const int hr = tid / B, b = tid % B, r = row0 + hr;
          if (r < Rx) {
            int32_t sum = 0;
            for (int w = 0; w < kWarps / 2; ++w) sum += s_part[hr * (kWarps / 2) + w][b];
            float v = hd::Dequantize(sum, s_sx[b], L.s_x[r]);
            if (L.b_x != nullptr) v += L.b_x[r];
            p.dbc[b * Rx + r] = v;
          }
        }
        __syncthreads();
      }
    }
    mark(5);
    GridBarrier(p.barrier);
    mark(6);
    // ---- P5: dt_proj + softplus + scan step + gate → y (one warp per channel) ------------------
    // Warm L2 with out_proj's weights while the scan and the Hadamard run.
    if (p.prefetch)
    for (int64_t off = (static_cast<int64_t>(blockIdx.x) * kThreads + tid) * 128; off < static_cast<int64_t>(d) * p.Ep;
         off += static_cast<int64_t>(gridDim.x) * kThreads * 128)
      PrefetchL2(L.w_out + off);
    for (int b = 0; b < B; ++b) {
      float amax = 0.0f;
      for (int c = tid; c < R; c += kThreads) amax = fmaxf(amax, fabsf(__ldcg(p.dbc + b * Rx + c)));
      amax = BlockMax(amax, fscratch);
      const float s = L.a_dt > 0.0f ? L.a_dt : hd::ScaleFromAbsMax(amax);
      const float qinv = 1.0f / s;
      for (int c = tid; c < p.Rp; c += kThreads) xq[b * kmax + c] = c < R ? hd::QuantizeValue(__ldcg(p.dbc + b * Rx + c), qinv) : 0;
      if (tid == 0) s_sx[b] = s;
      __syncthreads();
    }
    {
      // Two channels per warp: lanes 0–15 channel c, lanes 16–31 channel c + 1; lane n holds state n.
      const int n = lane & 15, half = lane >> 4;
      const int chunks = p.Rp / 16;
      for (int c0 = 2 * gw; c0 < E; c0 += 2 * nw) {
        const int c = c0 + half;
        const bool ok = c < E;
        const int cc = ok ? c : c0;
        // Issue every load of the step before the dot product needs the weights.
        float uu[kB], bn[kB], cn[kB], hh[kB], zz[kB];
        const int64_t state_off = static_cast<int64_t>(l) * E * N + cc * N + n;
        const int64_t slot_stride = static_cast<int64_t>(p.num_layers) * E * N;
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          if (b < B) {
            uu[b] = __ldcg(p.u + b * E + cc);
            bn[b] = __ldcg(p.dbc + b * Rx + R + n);
            cn[b] = __ldcg(p.dbc + b * Rx + R + N + n);
            zz[b] = __ldcg(p.xz + b * 2 * E + E + cc);
            hh[b] = p.ssm_state[p.slots[b] * slot_stride + state_off];
          }
        }
        const float a2 = L.A2[cc * N + n], dc = L.D[cc], bdt = L.b_dt != nullptr ? L.b_dt[cc] : 0.0f;
        const float gs = L.gate_scale != nullptr ? L.gate_scale[cc] : 0.0f, sdt = L.s_dt[cc];
        const int4 wv = (n < chunks) ? LdStream(L.w_dt + static_cast<int64_t>(cc) * p.Rp + n * 16) : make_int4(0, 0, 0, 0);
        int32_t acc[kB];
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          acc[b] = 0;
          if (b < B && n < chunks) {
            const int4 xv = *reinterpret_cast<const int4*>(xq + b * kmax + n * 16);
            acc[b] = hd::Dp4a(wv.x, xv.x, acc[b]);
            acc[b] = hd::Dp4a(wv.y, xv.y, acc[b]);
            acc[b] = hd::Dp4a(wv.z, xv.z, acc[b]);
            acc[b] = hd::Dp4a(wv.w, xv.w, acc[b]);
          }
          for (int o = 8; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
        }
#pragma unroll
        for (int b = 0; b < kB; ++b) {
          if (b >= B) break;
          const float delta = hd::Softplus(hd::Dequantize(acc[b], s_sx[b], sdt) + bdt);
          float h = hh[b];
          float part = hd::ScanStep<1>(&h, &a2, delta, delta * uu[b], &bn[b], &cn[b]);
          if (ok) p.ssm_state[p.slots[b] * slot_stride + state_off] = h;
          for (int o = 8; o > 0; o >>= 1) part += __shfl_xor_sync(0xffffffffu, part, o);
          if (ok && n == 0)
            p.y[b * E + c] = (part + dc * uu[b]) * (gs > 0.0f ? hd::SmoothSilu(zz[b], gs) : hd::Silu(zz[b]));
        }
      }
    }
    mark(7);
    GridBarrier(p.barrier);
    mark(8);
    // ---- P6: R2 Hadamard + INT8 of y --------------------------------------------------------------
    // B ≤ 2: every block transforms the tokens itself (no barrier); larger B: one block a token.
    const bool local_hadamard = B <= 2;
    if (!local_hadamard) {
      for (int b = blockIdx.x; b < B; b += gridDim.x)
        HadamardQuantToken(p.y + b * E, L, s_mix, E, p.Ep, sf, sf + E, p.yq + b * p.Ep, p.ys + b, fscratch);
      mark(9);
      GridBarrier(p.barrier);
      mark(10);
    }
    // ---- P7: out_proj → o -----------------------------------------------------------------------
    if (local_hadamard) {
      for (int b = 0; b < B; ++b)
        HadamardQuantToken(p.y + b * E, L, s_mix, E, p.Ep, sf, sf + E, xq + b * kmax, s_sx + b, fscratch);
    } else {
      const int n16 = B * p.Ep / 16;
      for (int i0 = tid; i0 < n16; i0 += 4 * kThreads) {
        int4 v[4];
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int i = i0 + k * kThreads;
          if (i < n16) v[k] = __ldcg(reinterpret_cast<const int4*>(p.yq + (i / (p.Ep / 16)) * p.Ep) + i % (p.Ep / 16));
        }
#pragma unroll
        for (int k = 0; k < 4; ++k) {
          const int i = i0 + k * kThreads;
          if (i < n16) *reinterpret_cast<int4*>(xq + (i / (p.Ep / 16)) * kmax + (i % (p.Ep / 16)) * 16) = v[k];
        }
      }
      if (tid < B) s_sx[tid] = __ldcg(p.ys + tid);
    }
    __syncthreads();
    if (p.prefetch && l + 1 < p.num_layers) {  // warm L2 with the next in_proj
      const FusedLayer& Ln = p.layers[l + 1];
      for (int64_t off = (static_cast<int64_t>(blockIdx.x) * kThreads + tid) * 128;
           off < static_cast<int64_t>(2 * E) * p.dp; off += static_cast<int64_t>(gridDim.x) * kThreads * 128)
        PrefetchL2(Ln.w_in + off);
    }
    {
      int32_t acc[2][kB];
      for (int row = 2 * gw; row < d; row += 2 * nw) {
        WarpRowsDot<2>(L.w_out, p.Ep, row, d, p.Ep / 16, 0, 32, xq, kmax, B, acc);
        if (lane < B) {
#pragma unroll
          for (int r = 0; r < 2; ++r) {
            if (row + r >= d) break;
            float v = 0.0f;
#pragma unroll
            for (int b = 0; b < kB; ++b)
              if (b == lane) v = hd::Dequantize(acc[r][b], s_sx[b], L.s_out[row + r]);
            if (L.b_out != nullptr) v += L.b_out[row + r];
            p.o[lane * d + row + r] = v;
          }
        }
      }
    }
    mark(11);
    GridBarrier(p.barrier);
    mark(12);
  }
  // ---- final residual add + norm_f → half rows for the LM head ---------------------------------
  const float* hlast = ((p.num_layers - 1) & 1) ? p.h0 : p.h1;
  for (int b = blockIdx.x; b < B; b += gridDim.x) {
    double ss = 0.0;
#pragma unroll 4
    for (int c = tid; c < d; c += kThreads) {
      const float v = __ldcg(hlast + b * d + c) + __ldcg(p.o + b * d + c);
      sf[c] = v;
      ss += static_cast<double>(v) * v;
    }
    ss = BlockSum(ss, &dscratch_m[0][0]);
    const float inv = static_cast<float>(1.0 / sqrt(ss / static_cast<double>(d) + static_cast<double>(p.eps)));
    for (int c = tid; c < p.dp; c += kThreads)
      p.hn[b * p.dp + c] = __float2half_rn(c < d ? p.norm_f[c] * (sf[c] * inv) : 0.0f);
    __syncthreads();
  }
}

size_t SmemBytes(int B, int d, int E, int dp, int Ep) {
  const int64_t kmax = dp > Ep ? dp : Ep;
  const int64_t bd = static_cast<int64_t>(B) * d;
  const int64_t fl = bd > 2 * E ? bd : 2 * E;
  return static_cast<size_t>(hd::RoundUp(static_cast<int64_t>(B) * kmax, 16) + fl * 4);
}

}  // namespace

StatusOr<int> FusedDecodeGridSize(int B, int d, int E, int dp, int Ep) {
  const size_t smem = SmemBytes(B, d, E, dp, Ep);
  const size_t smem_max = SmemBytes(kFusedMaxBatch, d, E, dp, Ep);  // graphs of every batch stay launchable
  if (smem_max > 220 * 1024) return UnimplementedError("fused decode: shapes too large for shared memory");
  MQ_CUDA_RETURN_IF_ERROR(
      cudaFuncSetAttribute(FusedDecodeKernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_max)));
  int per_sm = 0, dev = 0, sms = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, FusedDecodeKernel, kThreads, smem));
  MQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  MQ_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  if (per_sm < 1) return UnimplementedError("fused decode: kernel does not fit on a multiprocessor");
  return sms;  // one block per multiprocessor: cheap barriers, all blocks co-resident
}

Status LaunchFusedDecode(const FusedDecodeParams& p, int grid, cudaStream_t stream) {
  if (p.B < 1 || p.B > kFusedMaxBatch) return InvalidArgumentError("fused decode: batch must be 1..8");
  if (p.N != 16 || p.E % 32 != 0 || p.K > 8 || p.dp % 16 != 0 || p.Ep % 16 != 0 || p.Rp % 16 != 0 || p.Rp > 256)
    return UnimplementedError("fused decode: unsupported shape");
  FusedDecodeKernel<<<grid, kThreads, SmemBytes(p.B, p.d, p.E, p.dp, p.Ep), stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("FusedDecodeKernel");
  return OkStatus();
}

}  // namespace mq::cuda
