// The skinny INT8 GEMM of a decode step's per-stage linears (9–64 tokens): tensor cores
// (mma.sync m16n8k32 s8·s8 → s32) fed straight from the weight stream, which cuBLASLt's IMMA
// kernels read at 1.0–1.3 TB/s at these shapes (docs/benchmarks.md, batch 64). The plan, the
// fragment map and the shared-memory layout are skinny_gemm_plan.h's, emulated by the CPU twin.
// Weights come as int8 rows or packed int4 rows (W4A8, two levels a byte), unpacked in registers
// right after their load: a W4A8 model reads half the bytes and never writes unpacked weights.
#include <cooperative_groups.h>

#include "cuda/cuda_check.h"
#include "cuda/decode_device.cuh"
#include "cuda/int4_math.h"
#include "cuda/launch_attrs.h"
#include "cuda/skinny_gemm.h"
#include "cuda/skinny_gemm_plan.h"

namespace mq::cuda {
namespace {

namespace cg = cooperative_groups;

constexpr int kThreads = hd::kSkinnyWarps * 32;
constexpr int kUnroll = 4;  // chunks of weights in flight a lane: 4 × 2 tiles × 2 rows × 16 bytes

// 16 levels of row `row` at k (a multiple of 16) as four dp4a-order words.
template <bool kW4>
__device__ __forceinline__ int4 LoadPiece(const SkinnyGemmParams& p, int64_t row, int64_t k) {
  if constexpr (kW4) {
    const uint2 v = decode_dev::LdStream8(p.w4 + row * (p.ldw / 2) + k / 2);
    int4 r;
    hd::UnpackInt4Word(v.x, &r.x, &r.y);
    hd::UnpackInt4Word(v.y, &r.z, &r.w);
    return r;
  } else {
    return decode_dev::LdStream(reinterpret_cast<const uint8_t*>(p.w8 + row * p.ldw + k));
  }
}

__device__ __forceinline__ void Mma(int32_t* d, const int32_t* a, const int32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};"
      : "+r"(d[0]), "+r"(d[1]), "+r"(d[2]), "+r"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

__device__ __forceinline__ void CpAsync16(void* smem, const void* src, bool valid) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(d), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

// blockIdx.x = row block · ranks + rank (a cluster of `ranks` blocks along x owns a row block).
template <int kTT, bool kW4>
__global__ void __launch_bounds__(kThreads) SkinnyGemmKernel(SkinnyGemmParams p, hd::SkinnyGemmPlan pl) {
  extern __shared__ __align__(16) unsigned char smem[];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t rb = blockIdx.x / pl.ranks;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int64_t c0 = rank * pl.chunks_per_rank;
  const int64_t nc = pl.chunks - c0 < pl.chunks_per_rank ? pl.chunks - c0 : pl.chunks_per_rank;
  int64_t row[hd::kSkinnyRowTiles][2];
  bool row_ok[hd::kSkinnyRowTiles][2];
#pragma unroll
  for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt)
#pragma unroll
    for (int up = 0; up < 2; ++up) row[mt][up] = hd::SkinnyRow(rb, warp, mt, up, g), row_ok[mt][up] = row[mt][up] < p.out;

  int4 wv[kUnroll][hd::kSkinnyRowTiles][2];
  auto load_group = [&](int64_t cb) {
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      const int64_t k = hd::SkinnyPieceK(c0 + cb + u, t);
      const bool ok = cb + u < nc && k < p.k;
#pragma unroll
      for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt)
#pragma unroll
        for (int up = 0; up < 2; ++up)
          wv[u][mt][up] = ok && row_ok[mt][up] ? LoadPiece<kW4>(p, row[mt][up], k) : make_int4(0, 0, 0, 0);
    }
  };
  // The weights do not depend on the previous kernel: the first group is in flight before the
  // wait (programmatic dependent launch; a no-op without the launch attribute).
  load_group(0);
  asm volatile("griddepcontrol.wait;" ::: "memory");

  // Stage the block's k slice of every token (zeros past `tokens` and past k).
  const int64_t pieces = nc * kTT * 8 * 4;
  for (int64_t i = threadIdx.x; i < pieces; i += kThreads) {
    const int pt = static_cast<int>(i & 3);
    const int n = static_cast<int>((i >> 2) % (kTT * 8));
    const int64_t cl = (i >> 2) / (kTT * 8);
    const int64_t k = hd::SkinnyPieceK(c0 + cl, pt);
    const bool ok = n < p.tokens && k < p.k;
    CpAsync16(smem + hd::SkinnyStageOffset(cl, n, pt, kTT), ok ? p.x + n * p.ldx + k : p.x, ok);
  }
  asm volatile("cp.async.commit_group;" ::: "memory");

  int32_t acc[hd::kSkinnyRowTiles][kTT][4];
#pragma unroll
  for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kTT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0;
  asm volatile("cp.async.wait_group 0;" ::: "memory");
  __syncthreads();

  for (int64_t cb = 0; cb < nc; cb += kUnroll) {
    if (cb > 0) load_group(cb);
#pragma unroll
    for (int u = 0; u < kUnroll; ++u) {
      if (cb + u >= nc) break;
#pragma unroll
      for (int nt = 0; nt < kTT; ++nt) {
        const int4 xv = *reinterpret_cast<const int4*>(smem + hd::SkinnyStageOffset(cb + u, nt * 8 + g, t, kTT));
        const int32_t xw[4] = {xv.x, xv.y, xv.z, xv.w};
#pragma unroll
        for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt) {
          const int32_t lo[4] = {wv[u][mt][0].x, wv[u][mt][0].y, wv[u][mt][0].z, wv[u][mt][0].w};
          const int32_t hi[4] = {wv[u][mt][1].x, wv[u][mt][1].y, wv[u][mt][1].z, wv[u][mt][1].w};
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            int32_t a[4], b[2];
            hd::SkinnyFragments(lo, hi, xw, h, a, b);
            Mma(acc[mt][nt], a, b);
          }
        }
      }
    }
  }

  // Partial sums → shared memory [token][row] (the staged activations are dead once every warp is
  // past its last chunk), then the cluster's ranks each sum and store 1/ranks of the tile.
  __syncthreads();
  int32_t* part = reinterpret_cast<int32_t*>(smem);
#pragma unroll
  for (int mt = 0; mt < hd::kSkinnyRowTiles; ++mt)
#pragma unroll
    for (int nt = 0; nt < kTT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) part[hd::SkinnyPartIndex(warp, mt, nt, g, t, i)] = acc[mt][nt][i];
  cluster.sync();
  const int ntok = static_cast<int>(p.tokens < kTT * 8 ? p.tokens : kTT * 8);
  const int64_t row0 = rb * hd::kSkinnyRowsPerBlock;
  const int elems = ntok * hd::kSkinnyRowsPerBlock;
  const int32_t* src[hd::kSkinnyMaxRanks];
  for (int q = 0; q < pl.ranks; ++q) src[q] = cluster.map_shared_rank(part, q);
  for (int e = rank * kThreads + threadIdx.x; e < elems; e += pl.ranks * kThreads) {
    const int n = e / hd::kSkinnyRowsPerBlock, r = e % hd::kSkinnyRowsPerBlock;
    if (row0 + r >= p.out) continue;
    int32_t s = 0;
    for (int q = 0; q < pl.ranks; ++q) s += src[q][n * hd::kSkinnyPartLd + r];
    p.acc[n * p.ldc + row0 + r] = s;
  }
  cluster.sync();  // no rank leaves while another still reads its partial sums
}

template <int kTT, bool kW4>
Status Launch(const SkinnyGemmParams& p, const hd::SkinnyGemmPlan& pl, cudaStream_t stream) {
  const auto kernel = SkinnyGemmKernel<kTT, kW4>;
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                                       static_cast<int>(hd::kSkinnyStageBudget));
  MQ_CUDA_RETURN_IF_ERROR(attr);
  // Always a cluster launch, of one block when k is not split: the kernel's cluster calls need one.
  MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(kernel, dim3(static_cast<unsigned>(pl.blocks())), dim3(kThreads),
                                         static_cast<size_t>(pl.smem_bytes()), static_cast<unsigned>(pl.ranks), p.pdl,
                                         stream, p, pl));
  MQ_CUDA_CHECK_LAUNCH("SkinnyGemmKernel");
  return OkStatus();
}

template <bool kW4>
Status LaunchTiles(const SkinnyGemmParams& p, const hd::SkinnyGemmPlan& pl, cudaStream_t stream) {
  switch (pl.token_tiles) {
    case 1: return Launch<1, kW4>(p, pl, stream);
    case 2: return Launch<2, kW4>(p, pl, stream);
    case 3: return Launch<3, kW4>(p, pl, stream);
    case 4: return Launch<4, kW4>(p, pl, stream);
    case 5: return Launch<5, kW4>(p, pl, stream);
    case 6: return Launch<6, kW4>(p, pl, stream);
    case 7: return Launch<7, kW4>(p, pl, stream);
    default: return Launch<8, kW4>(p, pl, stream);
  }
}

}  // namespace

bool SkinnyGemmSupports(int64_t out, int64_t k, int64_t tokens) {
  if (tokens < 1 || tokens > hd::kSkinnyMaxTokens || out < 1 || k < 1) return false;
  return hd::SkinnyGemmPlanFits(hd::ChooseSkinnyGemmPlan(out, k, tokens, DeviceSmCount()));
}

Status LaunchSkinnyGemm(const SkinnyGemmParams& p, cudaStream_t stream) {
  if (p.out <= 0 || p.tokens <= 0) return OkStatus();
  if ((p.w8 == nullptr) == (p.w4 == nullptr)) return InvalidArgumentError("SkinnyGemm: exactly one of w8, w4");
  if (p.tokens > hd::kSkinnyMaxTokens)
    return InvalidArgumentError("SkinnyGemm: at most " + std::to_string(hd::kSkinnyMaxTokens) + " tokens");
  if (p.k % 16 != 0 || p.ldw % 16 != 0 || p.ldx % 16 != 0 || p.k > p.ldw || p.k > p.ldx || p.ldc < p.out)
    return InvalidArgumentError("SkinnyGemm: k and leading dimensions must be multiples of 16 (zero-padded)");
  const void* w = p.w8 != nullptr ? static_cast<const void*>(p.w8) : static_cast<const void*>(p.w4);
  if ((reinterpret_cast<uintptr_t>(w) | reinterpret_cast<uintptr_t>(p.x)) % 16 != 0)
    return InvalidArgumentError("SkinnyGemm: operands must be 16-byte aligned");
  const hd::SkinnyGemmPlan pl = hd::ChooseSkinnyGemmPlan(p.out, p.k, p.tokens, DeviceSmCount());
  if (!hd::SkinnyGemmPlanFits(pl)) return InvalidArgumentError("SkinnyGemm: k too long for the staged slices");
  if (pl.blocks() > 0x7fffffff) return InvalidArgumentError("SkinnyGemm: too many rows");
  return p.w4 != nullptr ? LaunchTiles<true>(p, pl, stream) : LaunchTiles<false>(p, pl, stream);
}

}  // namespace mq::cuda
