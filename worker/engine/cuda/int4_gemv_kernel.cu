// The packed-int4 kernels of W4A8 models (int4_kernels.h).
//
// Int4GemvKernel is Int8GemvKernel (int8_gemv_kernel.cu) with half the weight bytes: the same
// blocking (hd::GemvLayout: rows per warp, lanes per row, k split across warps) over chunks of 16
// elements, but a chunk of weights is 8 bytes, loaded with one non-allocating streaming load and
// unpacked in registers (hd::UnpackInt4Word: masks, a carry-free sign extension, two byte
// permutes) into the four int8 dp4a words the INT8 kernel would have loaded. The activations stay
// int8 and the sums exact int32, so the accumulators equal the INT8 GEMV's (and cuBLASLt's) on the
// same 4-bit levels bit for bit. Twice the chunks are kept in flight per lane (8 × 8 bytes) so
// that a warp has as many bytes outstanding as the INT8 kernel.
#include "cuda/cuda_check.h"
#include "cuda/hd_math.h"
#include "cuda/int4_kernels.h"
#include "cuda/int4_math.h"

namespace mq::cuda {
namespace {

constexpr int kUnroll = 8;

__device__ __forceinline__ uint2 LoadStreaming8(const uint8_t* p) {
  uint2 v;
  asm("ld.global.nc.L1::no_allocate.v2.u32 {%0, %1}, [%2];" : "=r"(v.x), "=r"(v.y) : "l"(p));
  return v;
}

// Two blocks an SM as a bound: without it ptxas held the 4- and 1-token kernels to 64 registers
// and spilled (nvcc --resource-usage, sm_90a); with it none spills (62–80 registers).
template <int kTokens>
__global__ void __launch_bounds__(hd::kGemvWarps * 32, 2) Int4GemvKernel(Int4GemvParams p, hd::GemvLayout l) {
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
    const uint8_t* wrow = p.w + row * (p.k / 2);
    for (int64_t it0 = 0; it0 < l.iters; it0 += kUnroll) {
      uint2 wv[kUnroll];
      int ch[kUnroll];  // a row has < 2^31 chunks; int32 keeps the 8 in flight within registers
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        ch[u] = static_cast<int>(hd::GemvChunk(l, kpart, gl, it0 + u));
        if (it0 + u < l.iters && ch[u] < l.chunks) wv[u] = LoadStreaming8(wrow + static_cast<int64_t>(ch[u]) * 8);
        else wv[u] = make_uint2(0, 0), ch[u] = -1;
      }
#pragma unroll
      for (int u = 0; u < kUnroll; ++u) {
        if (ch[u] < 0) continue;
#pragma unroll
        for (int j = 0; j < kTokens; ++j) {
          if (j < nt) {
            const int4 xv = __ldg(reinterpret_cast<const int4*>(p.x + (t0 + j) * p.ldx + static_cast<int64_t>(ch[u]) * 16));
            acc[j] = hd::Int4Dot16(wv[u].x, wv[u].y, xv.x, xv.y, xv.z, xv.w, acc[j]);
          }
        }
      }
    }
  }
  // Reductions exactly as the INT8 kernel: the group's lanes, then the k-split warps in order.
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
Status Launch(const Int4GemvParams& p, const hd::GemvLayout& l, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>((p.out + l.rows_per_block() - 1) / l.rows_per_block()),
                  static_cast<unsigned>((p.tokens + kTokens - 1) / kTokens));
  Int4GemvKernel<kTokens><<<grid, hd::kGemvWarps * 32, 0, stream>>>(p, l);
  MQ_CUDA_CHECK_LAUNCH("Int4GemvKernel");
  return OkStatus();
}

// Four packed bytes (8 weights) a thread → two int8 words.
__global__ void UnpackInt4Kernel(const uint32_t* w, int64_t words, uint2* out) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < words; i += int64_t{gridDim.x} * blockDim.x) {
    int32_t a, b;
    hd::UnpackInt4Word(w[i], &a, &b);
    out[i] = make_uint2(static_cast<uint32_t>(a), static_cast<uint32_t>(b));
  }
}

__device__ __forceinline__ uint64_t SplitMix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Byte i of row r holds columns 2i and 2i+1; levels uniform in −7..7 (15 values), zero past cols.
__global__ void FillRandomInt4Kernel(uint8_t* w, int64_t rows, int64_t cols, int64_t row_bytes, uint64_t seed) {
  for (int64_t i = blockIdx.x * int64_t{blockDim.x} + threadIdx.x; i < rows * row_bytes;
       i += int64_t{gridDim.x} * blockDim.x) {
    const int64_t c = 2 * (i % row_bytes);
    const uint64_t h = SplitMix(seed * 0x100000001b3ull + static_cast<uint64_t>(i));
    const int lo = c < cols ? static_cast<int>((h & 0xffffffffu) % 15u) - 7 : 0;
    const int hi = c + 1 < cols ? static_cast<int>((h >> 32) % 15u) - 7 : 0;
    w[i] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
  }
}

unsigned Blocks(int64_t n) { return static_cast<unsigned>(std::min<int64_t>((n + 255) / 256, 65536)); }

}  // namespace

Status LaunchInt4Gemv(const Int4GemvParams& p, cudaStream_t stream) {
  if (p.out <= 0 || p.tokens <= 0) return OkStatus();
  if (p.k % 16 != 0 || p.ldx % 16 != 0 || p.k > p.ldx)
    return InvalidArgumentError("Int4Gemv: k and the activations' leading dimension must be multiples of 16 (zero-padded)");
  if (reinterpret_cast<uintptr_t>(p.w) % 8 != 0 || reinterpret_cast<uintptr_t>(p.x) % 16 != 0)
    return InvalidArgumentError("Int4Gemv: weights must be 8-byte and activations 16-byte aligned");
  if ((p.tokens + 7) / 8 > 65535) return InvalidArgumentError("Int4Gemv: too many tokens");
  const hd::GemvLayout l = hd::ChooseGemvLayout(p.k, p.out);
  if (p.tokens == 1) return Launch<1>(p, l, stream);
  if (p.tokens == 2) return Launch<2>(p, l, stream);
  if (p.tokens <= 4) return Launch<4>(p, l, stream);
  return Launch<8>(p, l, stream);
}

Status LaunchUnpackInt4(const uint8_t* w, int64_t rows, int64_t ld, int8_t* out, cudaStream_t stream) {
  if (ld % 16 != 0) return InvalidArgumentError("UnpackInt4: rows must be padded to a multiple of 16 elements");
  if (reinterpret_cast<uintptr_t>(w) % 4 != 0 || reinterpret_cast<uintptr_t>(out) % 8 != 0)
    return InvalidArgumentError("UnpackInt4: misaligned buffers");
  const int64_t words = rows * ld / 8;
  if (words <= 0) return OkStatus();
  UnpackInt4Kernel<<<Blocks(words), 256, 0, stream>>>(reinterpret_cast<const uint32_t*>(w), words,
                                                      reinterpret_cast<uint2*>(out));
  MQ_CUDA_CHECK_LAUNCH("UnpackInt4Kernel");
  return OkStatus();
}

Status LaunchFillRandomInt4(uint8_t* w, int64_t rows, int64_t cols, int64_t ld, uint64_t seed, cudaStream_t stream) {
  if (ld % 2 != 0 || cols > ld) return InvalidArgumentError("FillRandomInt4: bad row length");
  const int64_t n = rows * (ld / 2);
  if (n <= 0) return OkStatus();
  FillRandomInt4Kernel<<<Blocks(n), 256, 0, stream>>>(w, rows, cols, ld / 2, seed);
  MQ_CUDA_CHECK_LAUNCH("FillRandomInt4Kernel");
  return OkStatus();
}

}  // namespace mq::cuda
