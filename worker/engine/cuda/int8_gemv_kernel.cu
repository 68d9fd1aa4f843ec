// Decode-time INT8 GEMV / skinny GEMM: acc[t, o] = Σ_k x[t, k]·w[o, k], exact int32, for up to
// kTokens tokens per pass (grid.y covers more). Weights stream once through 16-byte
// non-allocating loads, several chunks in flight per lane; dp4a does four products per
// instruction. Blocking (rows per warp, lanes per row, k split across warps) is hd::GemvLayout,
// shared with the CPU twin. At batch 1 cuBLASLt reaches about 1.3 TB/s on these shapes; this
// kernel is meant to run at the copy bandwidth.
#include "cuda/cuda_check.h"
#include "cuda/hd_math.h"
#include "cuda/kernel_params.h"

namespace mq::cuda {
namespace {

constexpr int kUnroll = 4;

__device__ __forceinline__ int4 LoadStreaming(const int8_t* p) {
  int4 v;
  asm("ld.global.nc.L1::no_allocate.v4.s32 {%0, %1, %2, %3}, [%4];"
      : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
      : "l"(p));
  return v;
}

template <int kTokens>
__global__ void __launch_bounds__(hd::kGemvWarps * 32) Int8GemvKernel(Int8GemvParams p, hd::GemvLayout l) {
  __shared__ int32_t s_part[hd::kGemvWarps][8][kTokens];  // [warp][row in warp][token]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int grp = lane / l.group, gl = lane % l.group;
  const int rowset = warp / l.ksplit, kpart = warp % l.ksplit;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * l.rows_per_block() + rowset * l.rows_per_warp + grp;
  const int64_t t0 = static_cast<int64_t>(blockIdx.y) * kTokens;
  const int nt = static_cast<int>((p.tokens - t0 < kTokens ? p.tokens - t0 : kTokens));
  int32_t acc[kTokens];
#pragma unroll
  for (int j = 0; j < kTokens; ++j) acc[j] = 0;
  if (row < p.out) {
    const int8_t* wrow = p.w + row * p.ldw;
    for (int64_t it0 = 0; it0 < l.iters; it0 += kUnroll) {
      int4 wv[kUnroll];
      int64_t ch[kUnroll];
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        ch[u] = hd::GemvChunk(l, kpart, gl, it0 + u);
        if (it0 + u < l.iters && ch[u] < l.chunks) wv[u] = LoadStreaming(wrow + ch[u] * 16);
        else wv[u] = make_int4(0, 0, 0, 0), ch[u] = -1;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (ch[u] < 0) continue;
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          if (j < nt) {
            const int4 xv = __ldg(reinterpret_cast<const int4*>(p.x + (t0 + j) * p.ldx + ch[u] * 16));
            acc[j] = hd::Dp4a(wv[u].x, xv.x, acc[j]);
            acc[j] = hd::Dp4a(wv[u].y, xv.y, acc[j]);
            acc[j] = hd::Dp4a(wv[u].z, xv.z, acc[j]);
            acc[j] = hd::Dp4a(wv[u].w, xv.w, acc[j]);
          }
        }
      }
    }
  }
  // Sum the group's lanes (groups are aligned runs of l.group lanes).
  for (int o = l.group / 2; o > 0; o >>= 1) {
#pragma unroll
    for (int j = 0; j < kTokens; ++j) acc[j] += __shfl_xor_sync(0xffffffffu, acc[j], o);
  }
  if (l.ksplit == 1) {
    if (gl == 0 && row < p.out) {
#pragma unroll
      for (int j = 0; j < kTokens; ++j)
        if (j < nt) p.acc[(t0 + j) * p.ldc + row] = acc[j];
    }
    return;
  }
  if (gl == 0) {
#pragma unroll
    for (int j = 0; j < kTokens; ++j) s_part[warp][grp][j] = acc[j];
  }
  __syncthreads();
  if (kpart == 0 && gl == 0 && row < p.out) {
#pragma unroll
    for (int j = 0; j < kTokens; ++j) {
      if (j < nt) {
        int32_t s = 0;
        for (int k = 0; k < l.ksplit; ++k) s += s_part[warp + k][grp][j];
        p.acc[(t0 + j) * p.ldc + row] = s;
      }
    }
  }
}

template <int kTokens>
Status Launch(const Int8GemvParams& p, const hd::GemvLayout& l, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.out + l.rows_per_block() - 1) / l.rows_per_block()),
                  static_cast<unsigned>((p.tokens + kTokens - 1) / kTokens));
  Int8GemvKernel<kTokens><<<grid, hd::kGemvWarps * 32, 0, stream>>>(p, l);
  MQ_CUDA_CHECK_LAUNCH("Int8GemvKernel");
  return OkStatus();
}

}  // namespace

Status LaunchInt8Gemv(const Int8GemvParams& p, cudaStream_t stream) {
  if (p.out <= 0 || p.tokens <= 0) return OkStatus();
  if (p.k % 16 != 0 || p.ldw % 16 != 0 || p.ldx % 16 != 0 || p.k > p.ldw || p.k > p.ldx)
    return InvalidArgumentError("Int8Gemv: k and leading dimensions must be multiples of 16 (zero-padded)");
  if ((reinterpret_cast<uintptr_t>(p.w) | reinterpret_cast<uintptr_t>(p.x)) % 16 != 0)
    return InvalidArgumentError("Int8Gemv: operands must be 16-byte aligned");
  if ((p.tokens + 7) / 8 > 65535) return InvalidArgumentError("Int8Gemv: too many tokens");
  const hd::GemvLayout l = hd::ChooseGemvLayout(p.k, p.out);
  if (p.tokens == 1) return Launch<1>(p, l, stream);
  if (p.tokens == 2) return Launch<2>(p, l, stream);
  if (p.tokens <= 4) return Launch<4>(p, l, stream);
  return Launch<8>(p, l, stream);
}

}  // namespace mq::cuda
