// Online randomized Hadamard (R2 before out_proj) fused with per-token INT8 quantization:
//   x ← x·H̃, H̃ = D·(H_m ⊗ H_p)/√n:  scale by D/√n, radix-2 Walsh–Hadamard butterflies over each
//   contiguous chunk of p = 2^k values, then the m×m ±1 mix across chunks (quant/hadamard.h).
// One block per token, the row in shared memory as float4 (16-byte loads and stores throughout).
// The butterfly levels run in registers: h = 1, 2 inside each float4 as the row is loaded, then
// passes of up to three levels, each thread taking the 2–8 float4 that a level pairs; the mix
// gives each thread two columns j with all m chunks' values in registers. So the row crosses
// shared memory once per pass instead of once per level (and once per mix term). Every element
// sees the additions of the CPU transform in the same order and with the same pairing
// (hd::ButterflyLow: level h pairs e and e + h; hd::MixOutput: i ascending), so the INT8 codes
// match the CPU's on the same input.
// Few tokens (a decode step): a token's row is split over a thread-block cluster instead
// (HadamardQuantClusterKernel, row_cluster_plan.h), so that all SMs work on it.
#include <cooperative_groups.h>


#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/decode_device.cuh"
#include "cuda/kernel_params.h"
#include "cuda/launch_attrs.h"
#include "cuda/row_cluster_plan.h"

namespace mq::cuda {
namespace {

constexpr int kMaxThreads = 512;  // 128 registers a thread for the mix's columns
constexpr int kMaxSmem = 192 * 1024;

// Shared-memory slot of float4 number q of the row: XOR-swizzled within aligned groups of 8, so
// that the strided float4 of a butterfly pass fall into distinct banks.
__device__ __forceinline__ int Slot(int q) { return q ^ ((q >> 3) & 7); }

__device__ __forceinline__ float AbsMax4(float amax, float4 v) {
  return fmaxf(amax, fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w))));
}

// (a, b) ← (a + b, a − b) elementwise: one butterfly of a level, four times.
__device__ __forceinline__ void Butterfly(float4& a, float4& b) {
  const float4 sum = make_float4(a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w);
  b = make_float4(a.x - b.x, a.y - b.y, a.z - b.z, a.w - b.w);
  a = sum;
}

// Levels h = 2^lo … 2^(lo+kW−1) (lo ≥ 2), ascending. A thread takes the 2^kW float4 whose indices
// differ only in bits [lo−2, lo−2+kW), i.e. the elements e + k·2^lo that these levels combine.
// With track, amax also covers the values written (the last transform step).
template <int kW>
__device__ __forceinline__ void ButterflyPass(float4* sx, int nq, int lo, bool track, float& amax) {
  constexpr int kV = 1 << kW;
  const int qb = lo - 2;
  for (int pos = threadIdx.x; pos < (nq >> kW); pos += blockDim.x) {
    const int q0 = ((pos >> qb) << (qb + kW)) | (pos & ((1 << qb) - 1));
    float4 v[kV];
#pragma unroll
    for (int k = 0; k < kV; ++k) v[k] = sx[Slot(q0 | (k << qb))];
#pragma unroll
    for (int bit = 1; bit < kV; bit <<= 1) {
#pragma unroll
      for (int k = 0; k < kV; ++k)
        if ((k & bit) == 0) Butterfly(v[k], v[k | bit]);
    }
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      sx[Slot(q0 | (k << qb))] = v[k];
      if (track) amax = AbsMax4(amax, v[k]);
    }
  }
}

// Element pairs (e, e + 1), e even, in the swizzled float4 layout.
__device__ __forceinline__ float2* Pair(float4* sx, int e) {
  return reinterpret_cast<float2*>(sx + Slot(e >> 2)) + ((e & 3) >> 1);
}

// The m×m mix: output (o, j) = Σ_i coef[o·m + i]·x[i·p + j], i ascending. A thread owns columns
// j, j + 1 of every chunk, so it reads them all before overwriting them in place. Returns the
// absolute maximum of its outputs.
template <int kM>
__device__ __forceinline__ float MixPass(float4* sx, const float* coef, int p) {
  float amax = 0.0f;
  for (int j = 2 * threadIdx.x; j < p; j += 2 * blockDim.x) {
    float2 x[kM];
#pragma unroll
    for (int i = 0; i < kM; ++i) x[i] = *Pair(sx, i * p + j);
#pragma unroll 2
    for (int o = 0; o < kM; ++o) {
      const float4* c4 = reinterpret_cast<const float4*>(coef + o * kM);
      float2 acc = make_float2(0.0f, 0.0f);
#pragma unroll
      for (int i4 = 0; i4 < kM / 4; ++i4) {
        const float4 c = c4[i4];
        const float cs[4] = {c.x, c.y, c.z, c.w};
#pragma unroll
        for (int r = 0; r < 4; ++r) {
          const int i = 4 * i4 + r;
          if (i == 0) {
            acc = make_float2(cs[0] * x[0].x, cs[0] * x[0].y);
          } else {
            acc.x += cs[r] * x[i].x;
            acc.y += cs[r] * x[i].y;
          }
        }
      }
      *Pair(sx, o * p + j) = acc;
      amax = fmaxf(amax, fmaxf(fabsf(acc.x), fabsf(acc.y)));
    }
  }
  return amax;
}

// kM: the small factor's order (1: no mix). log2p = log2(p).
template <int kM>
__global__ void __launch_bounds__(kMaxThreads) HadamardQuantKernel(HadamardQuantParams p, int log2p) {
  extern __shared__ float4 sx[];  // the row: n/4 float4 (rounded up to 8), swizzled
  __shared__ __align__(16) float s_mix[kM * kM];
  __shared__ float fscratch[32];
  const int64_t t = blockIdx.x;
  const int nq = static_cast<int>(p.n / 4);
  const bool transform = p.scale != nullptr;
  if constexpr (kM > 1) {
    for (int i = threadIdx.x; i < kM * kM; i += blockDim.x) s_mix[i] = static_cast<float>(p.mix[i]);
  }
  const float4* x = reinterpret_cast<const float4*>(p.x + t * p.n);
  const float4* scale = reinterpret_cast<const float4*>(p.scale);
  // The last step that writes the row also takes its absolute maximum.
  const bool load_is_last = !transform || (kM == 1 && log2p <= 2);
  float amax = 0.0f;
#pragma unroll 8
  for (int q = threadIdx.x; q < nq; q += blockDim.x) {
    float4 v = x[q];
    if (transform) {
      const float4 s = scale[q];
      // __fmul_rn: the product is rounded on its own, as the CPU does, never fused into h = 1's add.
      v = make_float4(__fmul_rn(v.x, s.x), __fmul_rn(v.y, s.y), __fmul_rn(v.z, s.z), __fmul_rn(v.w, s.w));
      v = make_float4(v.x + v.y, v.x - v.y, v.z + v.w, v.z - v.w);  // h = 1
      v = make_float4(v.x + v.z, v.y + v.w, v.x - v.z, v.y - v.w);  // h = 2
    }
    if (load_is_last) amax = AbsMax4(amax, v);
    sx[Slot(q)] = v;
  }
  if (transform) {
    for (int lo = 2; lo < log2p; lo += 3) {
      const int w = log2p - lo < 3 ? log2p - lo : 3;
      const bool track = kM == 1 && lo + w == log2p;
      __syncthreads();
      if (w == 3) {
        ButterflyPass<3>(sx, nq, lo, track, amax);
      } else if (w == 2) {
        ButterflyPass<2>(sx, nq, lo, track, amax);
      } else {
        ButterflyPass<1>(sx, nq, lo, track, amax);
      }
    }
    if constexpr (kM > 1) {
      __syncthreads();
      amax = MixPass<kM>(sx, s_mix, static_cast<int>(p.p));
    }
  }
  amax = BlockMax(amax, fscratch);  // its barriers also publish the row
  // QuantizeRow's arithmetic, four values at a time (q.ld is a multiple of 4).
  const QuantOut& q = p.quant;
  const float s = q.static_scale > 0.0f ? q.static_scale : hd::ScaleFromAbsMax(amax);
  const float inv = 1.0f / s;
  char4* out = reinterpret_cast<char4*>(q.q + t * q.ld);
  for (int i = threadIdx.x; i < q.ld / 4; i += blockDim.x) {
    char4 o = make_char4(0, 0, 0, 0);
    if (i < nq) {
      const float4 v = sx[Slot(i)];
      o = make_char4(hd::QuantizeValue(v.x, inv), hd::QuantizeValue(v.y, inv), hd::QuantizeValue(v.z, inv),
                     hd::QuantizeValue(v.w, inv));
    }
    out[i] = o;
  }
  if (threadIdx.x == 0) q.scale[t] = s;
}

template <int kM>
Status Launch(const HadamardQuantParams& p, int log2p, cudaStream_t stream) {
  static const cudaError_t attr =  // once per instantiation: rows up to 48k floats
      cudaFuncSetAttribute(HadamardQuantKernel<kM>, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem);
  MQ_CUDA_RETURN_IF_ERROR(attr);
  const size_t smem = static_cast<size_t>(hd::RoundUp(p.n / 4, 8)) * sizeof(float4);
  if (smem > kMaxSmem) return InvalidArgumentError("HadamardQuant: row too long");
  // One butterfly position (8 float4) per thread at full width.
  const int64_t want = hd::RoundUp(p.n / 32, 32);
  const int threads = static_cast<int>(want < 32 ? 32 : want > kMaxThreads ? kMaxThreads : want);
  HadamardQuantKernel<kM><<<static_cast<unsigned>(p.tokens), threads, smem, stream>>>(p, log2p);
  MQ_CUDA_CHECK_LAUNCH("HadamardQuantKernel");
  return OkStatus();
}

// ---- few tokens: one cluster a token ------------------------------------------------------------
namespace cg = cooperative_groups;
constexpr int kClusterThreads = 256;

// Levels h = 1 … seg/2 over the segments of seg values of x[0, len) (len a multiple of seg): in
// registers a warp a 32·V-value piece for the levels below min(seg, 256), then through shared
// memory, a barrier a level. The pairs and their order are hd::ButterflyLow's. Ends with a barrier.
__device__ __forceinline__ void LocalLevels(float* x, int64_t len, int64_t seg) {
  int64_t start = 1;
  if (seg >= 32) {
    const int64_t w = seg < 256 ? seg : 256;
    const int pieces = static_cast<int>(len / w);
    switch (w) {
      case 32: decode_dev::WarpHadamardChunks<1>(x, pieces); break;
      case 64: decode_dev::WarpHadamardChunks<2>(x, pieces); break;
      case 128: decode_dev::WarpHadamardChunks<4>(x, pieces); break;
      default: decode_dev::WarpHadamardChunks<8>(x, pieces); break;
    }
    start = w;
    __syncthreads();
  }
  int log2_half = 0;
  while ((int64_t{2} << log2_half) < seg) ++log2_half;
  for (int64_t hl = start; hl < seg; hl <<= 1) {
    for (int64_t i = threadIdx.x; i < len / 2; i += blockDim.x) {
      const int lo = hd::ButterflyLow(static_cast<int>(i), static_cast<int>(hl), static_cast<int>(seg), log2_half);
      const float a = x[lo], b = x[lo + hl];
      x[lo] = a + b;
      x[lo + hl] = a - b;
    }
    __syncthreads();
  }
}

// blockIdx.y: token; the cluster's blocks (blockIdx.x = rank) split its row (HadamardClusterPlan).
// Shared memory: sx [local] (read by the other ranks during the cross stage), sy [local] (this
// rank's outputs until the token's scale is known).
template <int kM, int kRanks>
__global__ void __launch_bounds__(kClusterThreads) HadamardQuantClusterKernel(HadamardQuantParams p,
                                                                              hd::HadamardClusterPlan pl) {
  extern __shared__ float smem[];
  __shared__ float s_mix[kM * kM];
  __shared__ float s_amax[kRanks];  // every rank's block maximum, pushed by its owner
  __shared__ float fscratch[32];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank());
  const int64_t t = blockIdx.y, L = pl.local, base = rank * L;
  float* sx = smem;
  float* sy = smem + hd::RoundUp(L, 4);
  if constexpr (kM > 1) {
    for (int i = threadIdx.x; i < kM * kM; i += blockDim.x) s_mix[i] = static_cast<float>(p.mix[i]);
  }
  // In a decode step's graph the kernel is launched early (programmatic dependent launch): the
  // constants above are loaded before waiting for y. Without the attribute both are no-ops.
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
  asm volatile("griddepcontrol.wait;" ::: "memory");
  const float* x = p.x + t * p.n + base;
  for (int64_t i = threadIdx.x; i < L; i += blockDim.x) sx[i] = __fmul_rn(x[i], p.scale[base + i]);
  __syncthreads();
  LocalLevels(sx, L, pl.seg);
  cluster.sync();  // every rank's local levels are done
  float amax = 0.0f;
  const float* src[kRanks];  // every rank's sx
#pragma unroll
  for (int r = 0; r < kRanks; ++r) src[r] = cluster.map_shared_rank(sx, r);
  if constexpr (kM > 1) {
    // A thread a column j: all m chunks' values at j, then this rank's output chunks.
    constexpr int per = kM / kRanks;
    const int64_t P = p.p;
    for (int64_t j = threadIdx.x; j < P; j += blockDim.x) {
      float v[kM];
#pragma unroll
      for (int i = 0; i < kM; ++i) v[i] = src[i / per][(i % per) * P + j];
      for (int oo = 0; oo < per; ++oo) {
        const float* c = s_mix + (rank * per + oo) * kM;
        float acc = c[0] * v[0];  // hd::MixOutput's order: ±1 products are exact
#pragma unroll
        for (int i = 1; i < kM; ++i) acc += c[i] * v[i];
        sy[oo * P + j] = acc;
        amax = fmaxf(amax, fabsf(acc));
      }
    }
  } else {
    for (int64_t j = threadIdx.x; j < L; j += blockDim.x) {
      float v[kRanks];
#pragma unroll
      for (int r = 0; r < kRanks; ++r) v[r] = src[r][j];
      hd::HadamardCrossLevels(v, kRanks);
      float out = v[0];
#pragma unroll
      for (int r = 1; r < kRanks; ++r)
        if (r == rank) out = v[r];
      sy[j] = out;
      amax = fmaxf(amax, fabsf(out));
    }
  }
  amax = BlockMax(amax, fscratch);  // its barriers also publish sy
  amax = ClusterMax(amax, s_amax, rank, kRanks);  // no shared memory of another rank is read after it
  // The last rank also zero-fills the padding [n, ld); rank 0 writes the scale.
  QuantizeRowSlice(sy, base, base + L, rank == kRanks - 1 ? p.quant.ld : base + L, amax, p.quant, t, rank == 0);
}

template <int kM, int kRanks>
Status LaunchCluster(const HadamardQuantParams& p, const hd::HadamardClusterPlan& pl, cudaStream_t stream) {
  const auto kernel = HadamardQuantClusterKernel<kM, kRanks>;
  const size_t smem = 2 * static_cast<size_t>(hd::RoundUp(pl.local, 4)) * sizeof(float);
  static const cudaError_t attr = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kMaxSmem);
  MQ_CUDA_RETURN_IF_ERROR(attr);
  MQ_CUDA_RETURN_IF_ERROR(LaunchKernelEx(kernel, dim3(static_cast<unsigned>(pl.ranks), static_cast<unsigned>(p.tokens)),
                                         dim3(kClusterThreads), smem, static_cast<unsigned>(pl.ranks), p.pdl, stream, p,
                                         pl));
  MQ_CUDA_CHECK_LAUNCH("HadamardQuantClusterKernel");
  return OkStatus();
}

bool Aligned16(const void* ptr) { return reinterpret_cast<uintptr_t>(ptr) % 16 == 0; }

}  // namespace

Status LaunchHadamardQuant(const HadamardQuantParams& p, cudaStream_t stream) {
  if (p.tokens <= 0) return OkStatus();
  if (p.n % 16 != 0 || p.quant.ld < p.n || p.quant.ld % 4 != 0 || !Aligned16(p.x) || !Aligned16(p.quant.q))
    return InvalidArgumentError("HadamardQuant: n must be a multiple of 16, rows 16-byte aligned");
  if (p.scale == nullptr) return Launch<1>(p, 0, stream);
  if (p.m * p.p != p.n || p.p < 4 || (p.p & (p.p - 1)) != 0 || !Aligned16(p.scale))
    return InvalidArgumentError("HadamardQuant: n must be m·2^k with k ≥ 2");
  if (p.m > 1 && p.mix == nullptr) return InvalidArgumentError("HadamardQuant: missing mix matrix");
  int log2p = 0;
  while ((int64_t{1} << log2p) < p.p) ++log2p;
  if (RowClustersEnabled() && DeviceSmCount() > 0) {
    const hd::HadamardClusterPlan pl = hd::MakeHadamardClusterPlan(p.tokens, p.n, p.m, p.p, DeviceSmCount());
    if (pl.ranks > 1 && 2 * hd::RoundUp(pl.local, 4) * 4 <= kMaxSmem) {
      const int key = p.m * 16 + pl.ranks;
      switch (key) {
        case 1 * 16 + 2: return LaunchCluster<1, 2>(p, pl, stream);
        case 1 * 16 + 4: return LaunchCluster<1, 4>(p, pl, stream);
        case 1 * 16 + 8: return LaunchCluster<1, 8>(p, pl, stream);
        case 12 * 16 + 2: return LaunchCluster<12, 2>(p, pl, stream);
        case 12 * 16 + 4: return LaunchCluster<12, 4>(p, pl, stream);
        case 20 * 16 + 2: return LaunchCluster<20, 2>(p, pl, stream);
        case 20 * 16 + 4: return LaunchCluster<20, 4>(p, pl, stream);
        case 28 * 16 + 2: return LaunchCluster<28, 2>(p, pl, stream);
        case 28 * 16 + 4: return LaunchCluster<28, 4>(p, pl, stream);
        default: break;  // the one-block kernel below
      }
    }
  }
  switch (p.m) {
    case 1: return Launch<1>(p, log2p, stream);
    case 12: return Launch<12>(p, log2p, stream);
    case 20: return Launch<20>(p, log2p, stream);
    case 28: return Launch<28>(p, log2p, stream);
    default: return InvalidArgumentError("HadamardQuant: the small factor must be 1, 12, 20 or 28");
  }
}

}  // namespace mq::cuda
