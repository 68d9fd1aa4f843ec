// The persistent decode kernel: one launch runs every layer of a decode step (B ≤ 4 tokens), one
// 512-thread block per SM, all blocks co-resident (cooperative launch). Opt-in
// (DecodePath::kPersistent) until it is measured faster than the layer kernels on the GPU.
//
// Why: the layer kernels (decode_kernels.cu) stream each GEMV's weights at bandwidth, but between
// them the small latency-bound work (x_proj, dt + scan, the R2 Hadamard) leaves DRAM idle, and a
// previous persistent kernel with grid-wide barriers (removed in 7b1c85a, 4.7 ms a 2.8b step) lost
// because every phase's weights were requested only after its barrier. Here the weights never wait
// for the data: each block copies its next weight slices global → shared memory into a ring of
// hd::kPersistStages stages, kPersistStages − 1 tiles ahead of the one being consumed. While a
// block waits at a grid barrier, quantizes, scans or transforms, the copies of its next x_proj,
// dt_proj and out_proj slices and of the next layer's in_proj slice are in flight, so DRAM keeps
// streaming for as long as the ring has room.
//
// Copies (v2): warp 0 issues each tile as bulk (TMA) copies — one for a contiguous range of whole
// rows, one a row for x_proj's column slice (hd::MakePersistTileCopy) — that complete on the
// stage's mbarrier; every thread waits on that mbarrier itself, so a tile costs one block barrier
// (the GEMV's, which also frees the stage and publishes the partial sums), and the epilogues
// alternate between two partial-sum buffers instead of ending with a barrier. The first version
// copied with per-thread 16-byte cp.async units (index arithmetic for every unit, a block barrier
// to publish each tile and one more after each epilogue) and issued 1.95·10⁹ warp instructions a
// 2.8b step: it ran at 12 % of DRAM bandwidth, instruction-bound (docs/benchmarks.md).
//
// Ownership (decode_persistent_plan.h, MakePersistBlockPlan; balanced contiguous splits):
//   channels [c0, c1): in_proj's x and z rows of those channels, conv + SiLU and the conv-state
//     shift in in_proj's epilogue, dt_proj's rows, the scan step and the gate;
//   x_proj split-K: the channels [xc0, xc1) (kPersistXUnit-channel units) of every x_proj row;
//   out_proj rows [o0, o1) of d.
// The weight stream of a block in one layer is the tiles of its in_proj x rows, in_proj z rows,
// x_proj column slice, dt_proj rows and out_proj rows, in that order; a tile is whole rows (of
// the slice) filling at most one stage.
//
// One layer, four grid barriers (none after the last layer; the LM head is the next kernel):
//   every block: h → RMSNorm (redundantly, h from L2) → INT8 | half activations in shared memory
//   in_proj tiles → z and u = SiLU(conv) of its channels, per-token |u| block max → atomicMax umax
//   ── barrier A: u and its per-token |max| complete
//   quantize u of its x_proj channels with the global scale; x_proj partial sums of its column
//   slice → red.add into xacc (exact int32 for INT8, so the sum is order-independent; float
//   atomics for FP16, whose order is not fixed)
//   ── barrier B: x_proj sums complete
//   every block: dequantize δ|B|C (redundantly), quantize δ; dt_proj + softplus + scan step +
//   gate of its channels → y (block 0 re-zeroes umax: all have read it)
//   ── barrier C: y complete (block 0 then re-zeroes xacc: all have read it)
//   every block: y → R2 Hadamard → INT8 (INT8; redundantly, y from L2) or → half (FP16);
//   out_proj tiles → h += ·
//   ── barrier D: h complete
// Each tile's epilogue reads only shared memory: the layer's small per-channel data (scales,
// biases, conv weights and state, A2, D, gate scales; hd::PersistSmallLayout) is copied in by the
// last warp with its own cp.async group at the start of the layer (under the norm), the block's z
// and u stay in shared memory from the in_proj epilogue to the scan, and its rows of h across
// layers. The first measurement (one L2 round trip or two per tile epilogue, the whole block
// waiting at the next __syncthreads) ran 2.1× slower than the layer kernels.
// Barriers are a never-reset 64-bit counter (epoch arithmetic: hd::PersistBarrierBase/Target), with
// release/acquire at GPU scope; data other blocks wrote is read with ld.global.cg (L2), never through
// L1. A barrier that does not open within 10 s traps rather than hangs.
//
// Arithmetic is the layer kernels' (decode_device.cuh, hd_math.h): INT8 GEMV sums are exact int32,
// the quantization, dequantization, conv, scan step, gate and Hadamard expressions are the same
// lines, so for INT8 and W4A8 the only differences to the layer kernels are the double-precision
// norm sums' order (the block size differs); FP16 also sums its GEMV products in another order.
#include <cuda_fp16.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/decode_device.cuh"
#include "cuda/decode_persistent.h"
#include "cuda/decode_persistent_plan.h"
#include "cuda/hd_math.h"

namespace mq::cuda {
namespace {

using namespace decode_dev;

constexpr int kThreads = hd::kPersistThreads;
constexpr int kWarps = hd::kPersistWarps;
constexpr int kStages = hd::kPersistStages;
constexpr int kMaxHadM = 28;
static_assert(kPersistentMaxBatch == hd::kPersistMaxBatch, "one batch limit");

// ---- asynchronous copies and grid barriers -----------------------------------------------------
__device__ __forceinline__ void CpAsyncCommit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int kN>
__device__ __forceinline__ void CpAsyncWait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(kN) : "memory");
}

// The weight ring's copies: bulk (TMA) copies global → shared that complete on the stage's
// mbarrier (one arrival, the issuing lane's, plus the stage's byte count).
__device__ __forceinline__ unsigned SmemAddr(const void* p) { return static_cast<unsigned>(__cvta_generic_to_shared(p)); }
__device__ __forceinline__ void MbarInit(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(SmemAddr(bar)), "r"(count) : "memory");
}
__device__ __forceinline__ void MbarInitFence() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
__device__ __forceinline__ void MbarArriveExpectTx(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(SmemAddr(bar)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void MbarWait(uint64_t* bar, unsigned parity) {
  asm volatile(
      "{\n"
      ".reg .pred done;\n"
      "WAIT_%=:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
      "@!done bra WAIT_%=;\n"
      "}\n" ::"r"(SmemAddr(bar)),
      "r"(parity)
      : "memory");
}
__device__ __forceinline__ void BulkCopy(void* dst, const void* src, unsigned bytes, uint64_t* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   SmemAddr(dst)),
               "l"(src), "r"(bytes), "r"(SmemAddr(bar))
               : "memory");
}

__device__ __forceinline__ unsigned long long LoadAcquire(const unsigned long long* p) {
  unsigned long long v;
  asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void AddRelease(unsigned long long* p) {
  asm volatile("red.release.gpu.global.add.u64 [%0], 1;" ::"l"(p) : "memory");
}
__device__ __forceinline__ unsigned long long GlobalTimerNs() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

// Every block arrives once; returns when the counter reaches target (hd::PersistBarrierTarget).
__device__ __forceinline__ void GridBarrier(unsigned long long* ctr, unsigned long long target) {
  __syncthreads();
  if (threadIdx.x == 0) {
    __threadfence();
    AddRelease(ctr);
    if (LoadAcquire(ctr) < target) {
      const unsigned long long t0 = GlobalTimerNs();
      unsigned spins = 0;
      while (LoadAcquire(ctr) < target) {
        // Blocks that are not co-resident would never arrive: fail loudly instead of hanging.
        if ((++spins & 1023u) == 0 && GlobalTimerNs() - t0 > 10'000'000'000ull) __trap();
      }
    }
    __threadfence();
  }
  __syncthreads();
}

// ---- the weight ring ---------------------------------------------------------------------------
// The weights of each segment of one layer, indexed by hd::PersistSeg (in_proj twice).
__device__ __forceinline__ void SegmentWeights(const PersistentLayer& l, const void** w) {
  w[hd::kSegInX] = l.in_proj.w, w[hd::kSegInZ] = l.in_proj.w, w[hd::kSegXProj] = l.x_proj.w;
  w[hd::kSegDt] = l.dt_proj.w, w[hd::kSegOut] = l.out_proj.w;
}

// Tile t of layer `layer` into `stage`, by warp 0 (lane 0 arms the stage's mbarrier with the
// tile's bytes first, then the lanes issue its copies: x_proj's slice is a copy a row).
// seg_w: the issuing layer's SegmentWeights (shared memory, refreshed when the layer changes, so
// that a tile's issue does not wait on a global load).
__device__ __forceinline__ void IssueTile(const hd::PersistBlockPlan& plan, const void* const* seg_w, int t,
                                          uint8_t* stage, uint64_t* full) {
  const int lane = threadIdx.x & 31;
  const hd::PersistTile tile = hd::PersistTileAt(plan, t);
  const hd::PersistSegment& g = plan.seg[tile.seg];
  const hd::PersistTileCopy c = hd::MakePersistTileCopy(g, tile.row0, tile.rows);
  const uint8_t* src = static_cast<const uint8_t*>(seg_w[tile.seg]) + c.src;
  if (lane == 0) MbarArriveExpectTx(full, static_cast<unsigned>(c.bytes * c.copies));
  __syncwarp();
  for (int k = lane; k < c.copies; k += 32)
    BulkCopy(stage + k * c.dst_pitch, src + k * c.src_pitch, static_cast<unsigned>(c.bytes), full);
}

// ---- the small per-layer data (hd::PersistSmallLayout), copied by the last warp ----------------
__device__ __forceinline__ void CpAsync4(void* dst, const void* src) {
  const unsigned d = static_cast<unsigned>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(d), "l"(src) : "memory");
}
// n floats from src (or `fill` where src is null) into dst, by the lanes of one warp.
__device__ __forceinline__ void StageFloats(float* dst, const float* src, int64_t n, float fill, int lane) {
  for (int64_t i = lane; i < n; i += 32) {
    if (src != nullptr) CpAsync4(dst + i, src + i);
    else dst[i] = fill;
  }
}
// Layer l's small data of the block's channels [c0, c1) and out_proj rows [o0, o1) into sm; one
// commit group (the caller's lane waits for it with cp.async.wait_group 0 before the first use).
__device__ __forceinline__ void IssueSmall(const DecodePersistentParams& p, const hd::PersistBlockPlan& plan,
                                           const hd::PersistSmallLayout& sl, float* sm, const PersistentLayer& g,
                                           int lane) {
  const int64_t c0 = plan.c0, nc = plan.c1 - plan.c0, o0 = plan.o0, no = plan.o1 - plan.o0;
  const int64_t E = p.E, K = p.K, S = K - 1, N = p.N;
  auto off = [](const float* q, int64_t o) -> const float* { return q == nullptr ? nullptr : q + o; };
  StageFloats(sm + sl.ws_x, off(g.in_proj.wscale, c0), nc, 1.0f, lane);
  StageFloats(sm + sl.b_x, off(g.in_proj.bias, c0), nc, 0.0f, lane);
  StageFloats(sm + sl.ws_z, off(g.in_proj.wscale, E + c0), nc, 1.0f, lane);
  StageFloats(sm + sl.b_z, off(g.in_proj.bias, E + c0), nc, 0.0f, lane);
  StageFloats(sm + sl.conv_b, off(g.conv_b, c0), nc, 0.0f, lane);
  StageFloats(sm + sl.D, off(g.D, c0), nc, 0.0f, lane);
  StageFloats(sm + sl.gate, off(g.gate_scale, c0), nc, 0.0f, lane);
  StageFloats(sm + sl.ws_dt, off(g.dt_proj.wscale, c0), nc, 1.0f, lane);
  StageFloats(sm + sl.b_dt, off(g.dt_proj.bias, c0), nc, 0.0f, lane);
  StageFloats(sm + sl.conv_w, off(g.conv_w, c0 * K), nc * K, 0.0f, lane);
  StageFloats(sm + sl.A2, off(g.A2, c0 * N), nc * N, 0.0f, lane);
  for (int b = 0; b < p.B; ++b)
    StageFloats(sm + sl.conv_state + b * sl.nc * S, g.conv_state + p.slots[b] * p.conv_slot_stride + c0 * S, nc * S, 0.0f,
                lane);
  StageFloats(sm + sl.ws_out, off(g.out_proj.wscale, o0), no, 1.0f, lane);
  StageFloats(sm + sl.b_out, off(g.out_proj.bias, o0), no, 0.0f, lane);
  CpAsyncCommit();
}

// ---- L2 prefetch of the small per-layer data ------------------------------------------------------
// [p, p + bytes) into L2, a 128-byte line per thread (every address inside the range).
__device__ __forceinline__ void PrefetchRangeL2(const void* p, int64_t bytes) {
  if (p == nullptr) return;
  const char* c = static_cast<const char*>(p);
  for (int64_t off = static_cast<int64_t>(threadIdx.x) * 128; off < bytes; off += static_cast<int64_t>(blockDim.x) * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// What the block's epilogues and scan of layer l read besides the streamed weights — its channels'
// conv and SSM state, conv weights, A, D, gate and dequantization constants, its out_proj rows'
// constants — requested into L2 a layer ahead, so that those scattered reads hit L2 instead of
// adding DRAM round trips to the latency chain.
__device__ __forceinline__ void PrefetchLayerSmallData(const DecodePersistentParams& p, const hd::PersistBlockPlan& plan,
                                                       int64_t l) {
  const PersistentLayer& g = p.layer[l];
  const int64_t c0 = plan.c0, nc = plan.c1 - plan.c0, S = p.K - 1, N = p.N;
  if (nc > 0) {
    for (int b = 0; b < p.B; ++b) {
      const int64_t slot = p.slots[b];
      PrefetchRangeL2(g.conv_state + slot * p.conv_slot_stride + c0 * S, nc * S * 4);
      PrefetchRangeL2(g.ssm_state + slot * p.ssm_slot_stride + c0 * N, nc * N * 4);
    }
    PrefetchRangeL2(g.conv_w + c0 * p.K, nc * p.K * 4);
    PrefetchRangeL2(g.conv_b + c0, nc * 4);
    PrefetchRangeL2(g.A2 + c0 * N, nc * N * 4);
    PrefetchRangeL2(g.D + c0, nc * 4);
    PrefetchRangeL2(g.gate_scale == nullptr ? nullptr : g.gate_scale + c0, nc * 4);
    for (const DecodeLinear* lin : {&g.in_proj, &g.dt_proj}) {
      PrefetchRangeL2(lin->wscale == nullptr ? nullptr : lin->wscale + c0, nc * 4);
      PrefetchRangeL2(lin->bias == nullptr ? nullptr : lin->bias + c0, nc * 4);
    }
    PrefetchRangeL2(g.in_proj.wscale == nullptr ? nullptr : g.in_proj.wscale + p.E + c0, nc * 4);
    PrefetchRangeL2(g.in_proj.bias == nullptr ? nullptr : g.in_proj.bias + p.E + c0, nc * 4);
  }
  const int64_t no = plan.o1 - plan.o0;
  if (no > 0) {
    PrefetchRangeL2(g.out_proj.wscale == nullptr ? nullptr : g.out_proj.wscale + plan.o0, no * 4);
    PrefetchRangeL2(g.out_proj.bias == nullptr ? nullptr : g.out_proj.bias + plan.o0, no * 4);
  }
}

// ---- GEMV over one tile in shared memory ---------------------------------------------------------
// rows × row_bytes weights (dense rows) against xs ([kB][xs_ld] bytes); warp tasks as
// hd::MakePersistTileTasks plans them; partial sums into red[(r·parts + part)·kB + b]. Ends with a
// block barrier; returns parts.
template <typename Acc, int kB, bool kW4>
__device__ __forceinline__ int TileGemv(const uint8_t* tile, int rows, int row_bytes, const uint8_t* xs, int64_t xs_ld,
                                        int B, Acc* red) {
  using W = WChunk<kW4>;
  const int chunks = row_bytes / W::kBytes;
  const hd::PersistTileTasks tt = hd::MakePersistTileTasks(rows, chunks);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int gl = lane & (tt.lanes - 1), rl = lane >> tt.lanes_log2;
  for (int task = warp; task < tt.groups * tt.parts; task += kWarps) {
    const int grp = task >> tt.parts_log2, part = task & (tt.parts - 1);
    const int r = grp * tt.rows_per_warp + rl;
    Acc acc[kB];
#pragma unroll
    for (int b = 0; b < kB; ++b) acc[b] = 0;
    if (r < rows) {
      const uint8_t* wr = tile + static_cast<int64_t>(r) * row_bytes;
      for (int c = part * tt.lanes + gl; c < chunks; c += tt.lanes * tt.parts) {
        const typename W::T w = *reinterpret_cast<const typename W::T*>(wr + c * W::kBytes);
#pragma unroll
        for (int b = 0; b < kB; ++b)
          if (b < B) Dot16(acc[b], w, *reinterpret_cast<const int4*>(xs + b * xs_ld + c * 16));
      }
    }
#pragma unroll
    for (int b = 0; b < kB; ++b)
      for (int o = tt.lanes / 2; o > 0; o >>= 1) acc[b] += __shfl_xor_sync(0xffffffffu, acc[b], o);
    if (r < rows && gl == 0) {
#pragma unroll
      for (int b = 0; b < kB; ++b) red[(r * tt.parts + part) * kB + b] = acc[b];
    }
  }
  __syncthreads();
  return tt.parts;
}

// Sums the parts of each (row, token) in a fixed order and hands them to epi. No block barrier:
// the next tile's GEMV writes the other partial-sum buffer, and the one after it starts only
// after the next GEMV's closing barrier, which every thread reaches after this epilogue. Code that
// reads what the epilogues wrote synchronizes the block first.
// Item i runs on lane i / kWarps of warp i mod kWarps: a tile's few items spread over the warps
// instead of queueing in warp 0, which also issues the next copies.
template <typename Acc, int kB, typename Epi>
__device__ __forceinline__ void TileEpilogue(int rows, int parts, int B, const Acc* red, Epi epi) {
  const int first = (threadIdx.x & 31) * kWarps + (threadIdx.x >> 5);
  for (int i = first; i < rows * B; i += blockDim.x) {
    const int b = i / rows, r = i - b * rows;
    Acc s = red[(r * parts) * kB + b];
    for (int q = 1; q < parts; ++q) s += red[(r * parts + q) * kB + b];
    epi(r, b, s);
  }
}

// acc·s_x·s_w + bias (INT8) or acc + bias: the layer kernels' Dequant (a missing scale is 1, a
// missing bias 0).
template <bool kInt8>
__device__ __forceinline__ float DequantWith(AccT<kInt8> s, float sx, float ws, float bias) {
  float v;
  if constexpr (kInt8) v = hd::Dequantize(s, sx, ws);
  else v = s;
  return step_math::Add(v, bias);  // not fused with the product: the CPU rounds it first
}
template <bool kInt8>
__device__ __forceinline__ float DequantRow(AccT<kInt8> s, float sx, const DecodeLinear& lin, int64_t row) {
  return DequantWith<kInt8>(s, sx, lin.wscale != nullptr ? __ldg(lin.wscale + row) : 1.0f,
                            lin.bias != nullptr ? __ldg(lin.bias + row) : 0.0f);
}

// ---- the kernel ----------------------------------------------------------------------------------
template <int kFmt, int kB>
__global__ void __launch_bounds__(kThreads, 1)
    PersistentDecodeKernel(DecodePersistentParams p, hd::PersistShape shape, hd::PersistSmemLayout lay) {
  constexpr bool kInt8 = kFmt != hd::kPersistF16;
  constexpr bool kW4 = kFmt == hd::kPersistW4;
  using Acc = AccT<kInt8>;
  using W = WChunk<kW4>;
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(16) unsigned char plan_raw[sizeof(hd::PersistBlockPlan)];
  __shared__ __align__(16) unsigned char layer_raw[sizeof(PersistentLayer)];
  __shared__ float s_sin[kB], s_sx[kB], s_sd[kB], s_so[kB];
  __shared__ unsigned int s_umax[kB];
  __shared__ double dscr[32];
  __shared__ float fscr[32];
  __shared__ uint32_t s_neg[kMaxHadM];
  __shared__ unsigned long long s_base;
  __shared__ __align__(8) uint64_t s_full[kStages];  // a stage's tile has landed (mbarrier)
  __shared__ const void* s_issue_w[hd::kPersistSegs];  // warp 0: the issuing layer's weights
  hd::PersistBlockPlan& plan = *reinterpret_cast<hd::PersistBlockPlan*>(plan_raw);
  const PersistentLayer& L = *reinterpret_cast<const PersistentLayer*>(layer_raw);
  uint8_t* ring = smem + lay.ring_off;
  uint8_t* act = smem + lay.act_off;
  float* work = reinterpret_cast<float*>(smem + lay.work_off);
  Acc* red = reinterpret_cast<Acc*>(smem + lay.red_off);
  float* sm = reinterpret_cast<float*>(smem + lay.small_off);
  const hd::PersistSmallLayout& sl = lay.small;
  Acc* xacc = static_cast<Acc*>(p.xacc);
  const int B = p.B;
  const int64_t d = p.d, E = p.E, N = p.N, R = p.R, K = p.K, S = K - 1, cols = R + 2 * N;
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int64_t act_ld = lay.act_ld;

  if (tid == 0) {
    plan = hd::MakePersistBlockPlan(shape, lay.stage_bytes, gridDim.x, blockIdx.x);
    s_base = hd::PersistBarrierBase(LoadAcquire(p.barrier), hd::PersistBarriersPerLaunch(p.layers), gridDim.x);
    for (int i = 0; i < kStages; ++i) MbarInit(&s_full[i], 1);
    MbarInitFence();
  }
  __syncthreads();
  // The block's rows of h live in shared memory across layers (only this block writes them).
  for (int64_t i = tid; i < B * (plan.o1 - plan.o0); i += blockDim.x) {
    const int64_t b = i / (plan.o1 - plan.o0), r = i % (plan.o1 - plan.o0);
    sm[sl.h + b * sl.o_ld + r] = __ldcg(p.h + b * d + plan.o0 + r);
  }
  uint64_t barriers = 0;
  auto grid_sync = [&] { GridBarrier(p.barrier, hd::PersistBarrierTarget(s_base, barriers++, gridDim.x)); };

  // The ring: before tile q is consumed, tiles up to q + kStages − 1 have been issued (by warp 0;
  // every thread keeps the counters). Stage q mod kStages holds tile q; its mbarrier's phase
  // (q / kStages) mod 2 completes when the tile's bytes have landed.
  int64_t issue_layer = 0;
  int issue_t = 0, issued = 0, consumed = 0;
  auto issue_next = [&] {
    if (issue_layer >= p.layers || plan.tiles == 0) return;
    const int st = issued % kStages;
    if (warp == 0) {
      if (issue_t == 0) {
        if (lane == 0) SegmentWeights(p.layer[issue_layer], s_issue_w);
        __syncwarp();
      }
      IssueTile(plan, s_issue_w, issue_t, ring + st * lay.stage_bytes, &s_full[st]);
    }
    ++issued;
    if (++issue_t == plan.tiles) issue_t = 0, ++issue_layer;
  };
  for (int i = 0; i < kStages - 1; ++i) issue_next();
  PrefetchLayerSmallData(p, plan, 0);
  // The next tile (whose rows start `lead` bytes into its stage) once it has landed.
  auto acquire = [&](int lead) -> const uint8_t* {
    // Stage (consumed − 1) mod kStages is free: the previous tile's GEMV ended with a block barrier.
    issue_next();
    // The last warp: this layer's small data (its only cp.async groups), published to the block
    // by the GEMV's closing barrier before any epilogue reads it.
    if (warp == kWarps - 1) CpAsyncWait<0>();
    const int st = consumed % kStages;
    MbarWait(&s_full[st], static_cast<unsigned>((consumed / kStages) & 1));
    ++consumed;
    return ring + st * lay.stage_bytes + lead;
  };
  // Every tile of segment g: acquire it, its GEMV, then epi(row, token, sum) for each of its rows
  // (row: the matrix row).
  auto gemv_segment = [&](const hd::PersistSegment& g, auto epi) {
    for (int ti = 0; ti < g.tiles; ++ti) {
      const int64_t r0 = g.row0 + ti * g.rows_per_tile;
      const int rows = static_cast<int>(min(g.rows_per_tile, g.row0 + g.rows - r0));
      const uint8_t* tile = acquire(hd::PersistTileLead(g, r0));
      Acc* rd = red + ((consumed - 1) & 1) * hd::PersistRedElems(kB);  // the two buffers alternate
      const int parts = TileGemv<Acc, kB, kW4>(tile, rows, static_cast<int>(g.row_bytes), act, act_ld, B, rd);
      TileEpilogue<Acc, kB>(rows, parts, B, rd, [&](int r, int b, Acc sum) { epi(r0 + r, b, sum); });
    }
  };

  for (int64_t l = 0; l < p.layers; ++l) {
    {
      const uint32_t* src = reinterpret_cast<const uint32_t*>(p.layer + l);
      uint32_t* dst = reinterpret_cast<uint32_t*>(layer_raw);
      for (int i = tid; i < static_cast<int>(sizeof(PersistentLayer) / 4); i += blockDim.x) dst[i] = src[i];
    }
    if (tid < kB) s_umax[tid] = 0u;
    __syncthreads();
    if (tid < L.had_m && tid < kMaxHadM) s_neg[tid] = L.had_neg != nullptr ? L.had_neg[tid] : 0u;
    // The previous layer's epilogues are done (block barrier above): restage the small data while
    // the norm runs; the first tile's acquire() waits for it.
    if (warp == kWarps - 1) IssueSmall(p, plan, sl, sm, L, lane);
    if (l + 1 < p.layers) PrefetchLayerSmallData(p, plan, l + 1);

    // ---- RMSNorm → in_proj → conv + SiLU ----
    for (int b = 0; b < B; ++b) {
      const float amax = NormRow<kInt8, true>(p.h + b * d, L.norm, d, p.eps, work, dscr, fscr);
      StoreAct<kInt8>(work, d, L.in_proj.ld, amax, L.in_proj.act_static_scale, act + b * act_ld, &s_sin[b]);
      __syncthreads();
    }
    for (int k = hd::kSegInX; k <= hd::kSegInZ; ++k) {
      gemv_segment(plan.seg[k], [&](int64_t row, int b, Acc s) {
        const bool xrow = k == hd::kSegInX;
        const int64_t cl = row - plan.c0 - (xrow ? 0 : E);  // the block's channel index
        const float v = DequantWith<kInt8>(s, s_sin[b], sm[(xrow ? sl.ws_x : sl.ws_z) + cl],
                                           sm[(xrow ? sl.b_x : sl.b_z) + cl]);
        if (xrow) {
          const float* st_in = sm + sl.conv_state + (b * sl.nc + cl) * S;
          const float u = step_math::ConvStepSilu(st_in, sm + sl.conv_w + cl * K, sm[sl.conv_b + cl], K, v);
          p.u[b * E + row] = u;
          sm[sl.u + b * sl.c_ld + cl] = u;
          float* st = L.conv_state + p.slots[b] * p.conv_slot_stride + row * S;
          for (int64_t s2 = 0; s2 + 1 < S; ++s2) st[s2] = st_in[s2 + 1];
          st[S - 1] = v;
          if constexpr (kInt8) atomicMax(&s_umax[b], __float_as_uint(fabsf(u)));
        } else {
          sm[sl.z + b * sl.c_ld + cl] = v;
        }
      });
    }
    __syncthreads();  // the epilogues' |u| maxima
    if (kInt8 && tid < B && s_umax[tid] != 0u) atomicMax(p.umax + tid, s_umax[tid]);
    grid_sync();  // A: u and its |max| complete

    // ---- x_proj, split over channels ----
    if (tid < B) {
      float s = 1.0f;
      if constexpr (kInt8) {
        const float amax = __uint_as_float(__ldcg(p.umax + tid));
        s = L.x_proj.act_static_scale > 0.0f ? L.x_proj.act_static_scale : hd::ScaleFromAbsMax(amax);
      }
      s_sx[tid] = s;
    }
    __syncthreads();
    {
      const hd::PersistSegment& g = plan.seg[hd::kSegXProj];
      if (g.tiles > 0) {
        const int64_t nx = plan.xc1 - plan.xc0;
        for (int64_t i = tid; i < B * nx; i += blockDim.x) {
          const int b = static_cast<int>(i / nx);
          const int64_t c = i % nx;
          const float u = __ldcg(p.u + b * E + plan.xc0 + c);
          if constexpr (kInt8) reinterpret_cast<int8_t*>(act + b * act_ld)[c] = hd::QuantizeValue(u, 1.0f / s_sx[b]);
          else reinterpret_cast<__half*>(act + b * act_ld)[c] = __float2half_rn(u);
        }
        __syncthreads();
      }
      gemv_segment(g, [&](int64_t row, int b, Acc s) { atomicAdd(xacc + b * cols + row, s); });
    }
    grid_sync();  // B: x_proj sums complete

    // ---- δ|B|C, dt_proj + softplus + scan step + gate ----
    for (int64_t i = tid; i < B * cols; i += blockDim.x) {
      const int b = static_cast<int>(i / cols);
      work[i] = DequantRow<kInt8>(__ldcg(xacc + i), s_sx[b], L.x_proj, i % cols);
    }
    if (blockIdx.x == 0 && tid < B) p.umax[tid] = 0u;  // every block read it before arriving at B
    __syncthreads();
    for (int b = warp; b < B; b += kWarps) {
      const float* row = work + b * cols;
      const DecodeLinear& lin = L.dt_proj;
      if constexpr (kInt8) {
        float amax = 0.0f;
        for (int64_t i = lane; i < R; i += 32) amax = fmaxf(amax, fabsf(row[i]));
        amax = WarpMax(amax);
        const float s = lin.act_static_scale > 0.0f ? lin.act_static_scale : hd::ScaleFromAbsMax(amax);
        const float inv = 1.0f / s;
        int8_t* q = reinterpret_cast<int8_t*>(act + b * act_ld);
        for (int64_t i = lane; i < lin.ld; i += 32) q[i] = i < R ? hd::QuantizeValue(row[i], inv) : 0;
        if (lane == 0) s_sd[b] = s;
      } else {
        __half* q = reinterpret_cast<__half*>(act + b * act_ld);
        for (int64_t i = lane; i < lin.ld; i += 32) q[i] = __float2half_rn(i < R ? row[i] : 0.0f);
      }
    }
    __syncthreads();
    {
      const hd::PersistSegment& g = plan.seg[hd::kSegDt];
      const int dt_chunks = static_cast<int>(g.row_bytes / W::kBytes);
      for (int ti = 0; ti < g.tiles; ++ti) {
        const int64_t r0 = g.row0 + ti * g.rows_per_tile;
        const int rows = static_cast<int>(min(g.rows_per_tile, g.row0 + g.rows - r0));
        const uint8_t* tile = acquire(hd::PersistTileLead(g, r0));
        // Four lanes a channel, four states each (the layer kernels' DtScanKernel): the same dot
        // order, the same scan and gate.
        for (int base = 0; base < rows; base += kThreads / 4) {
          const int i = base + tid / 4, gq = tid % 4;
          const bool active = i < rows;
          const int64_t c = r0 + (active ? i : 0);
          const int64_t cl = c - plan.c0;
          const uint8_t* wrow = tile + static_cast<int64_t>(active ? i : 0) * g.row_bytes;
          float a2[4];
          {
            const float4 v = *reinterpret_cast<const float4*>(sm + sl.A2 + cl * N + gq * 4);
            a2[0] = v.x, a2[1] = v.y, a2[2] = v.z, a2[3] = v.w;
          }
          const float dcoef = sm[sl.D + cl];
          const float gscale = sm[sl.gate + cl];
          const float dt_ws = sm[sl.ws_dt + cl];
          const float dt_bias = sm[sl.b_dt + cl];
#pragma unroll
          for (int b = 0; b < kB; ++b) {
            if (b >= B) break;
            Acc acc = 0;
            for (int ch = gq; ch < dt_chunks; ch += 4)
              Dot16(acc, *reinterpret_cast<const typename W::T*>(wrow + ch * W::kBytes),
                    *reinterpret_cast<const int4*>(act + b * act_ld + ch * 16));
            acc += __shfl_xor_sync(0xffffffffu, acc, 2);
            acc += __shfl_xor_sync(0xffffffffu, acc, 1);
            float dtl;
            if constexpr (kInt8) dtl = hd::Dequantize(acc, s_sd[b], dt_ws);
            else dtl = acc;
            const float dt = step_math::Softplus(step_math::Add(dtl, dt_bias));
            const float z = sm[sl.z + b * sl.c_ld + cl];
            const float u = sm[sl.u + b * sl.c_ld + cl];
            const float gate = L.gate_scale != nullptr ? step_math::SmoothSilu(z, gscale) : step_math::Silu(z);
            float* hs = L.ssm_state + p.slots[b] * p.ssm_slot_stride + c * N + gq * 4;
            const float4 hv = *reinterpret_cast<const float4*>(hs);
            float h[4] = {hv.x, hv.y, hv.z, hv.w};
            const float* bc = work + b * cols + R;
            const float yv = ScanStepExact4(h, a2, dt, dt * u, bc + gq * 4, bc + N + gq * 4, dcoef, u, gate);
            if (active) {
              *reinterpret_cast<float4*>(hs) = make_float4(h[0], h[1], h[2], h[3]);
              if (gq == 0) p.y[b * E + c] = yv;
            }
          }
        }
        __syncthreads();
      }
    }
    grid_sync();  // C: y complete
    if (blockIdx.x == 0)  // every block read the x_proj sums before arriving at C
      for (int64_t i = tid; i < B * cols; i += blockDim.x) xacc[i] = 0;

    // ---- [R2 Hadamard →] out_proj's input ----
    const DecodeLinear& lo = L.out_proj;
    if constexpr (kInt8) {
      float* sx = work;
      float* sy = work + hd::RoundUp(E, 4);
      const int m = L.had_m;
      const int P = static_cast<int>(L.had_p);
      int log2_half = 0;
      while ((int64_t{2} << log2_half) < L.had_p) ++log2_half;
      for (int b = 0; b < B; ++b) {
        LoadRow<2, true>(p.y + b * E, L.had_scale, E, sx);
        __syncthreads();
        const float* res = sx;
        if (L.had_scale != nullptr) {
          switch (P) {
            case 32: WarpHadamardChunks<1>(sx, m); break;
            case 64: WarpHadamardChunks<2>(sx, m); break;
            case 128: WarpHadamardChunks<4>(sx, m); break;
            case 256: WarpHadamardChunks<8>(sx, m); break;
            default: BlockHadamardChunks(sx, E, P, log2_half);
          }
          __syncthreads();
          if (m > 1) {
            for (int64_t k = tid; k < E; k += blockDim.x) sy[k] = hd::MixOutputMasked(sx, s_neg[k / P], m, P, static_cast<int>(k % P));
            res = sy;
            __syncthreads();
          }
        }
        float amax = 0.0f;
        for (int64_t i = tid; i < E; i += blockDim.x) amax = fmaxf(amax, fabsf(res[i]));
        amax = BlockMax(amax, fscr);
        const float s = lo.act_static_scale > 0.0f ? lo.act_static_scale : hd::ScaleFromAbsMax(amax);
        const float inv = 1.0f / s;
        int8_t* q = reinterpret_cast<int8_t*>(act + b * act_ld);
        for (int64_t c = tid; c < lo.ld; c += blockDim.x) q[c] = c < E ? hd::QuantizeValue(res[c], inv) : 0;
        if (tid == 0) s_so[b] = s;
        __syncthreads();
      }
    } else {
      for (int b = 0; b < B; ++b) {
        LoadRow<kLoadsInFlight, true>(p.y + b * E, nullptr, E, work);
        __syncthreads();
        StoreAct<false>(work, E, lo.ld, 0.0f, 0.0f, act + b * act_ld, nullptr);
        __syncthreads();
      }
    }

    // ---- out_proj → residual ----
    gemv_segment(plan.seg[hd::kSegOut], [&](int64_t row, int b, Acc s) {
      const int64_t ol = row - plan.o0;
      float* hh = sm + sl.h + b * sl.o_ld + ol;
      const float nv = step_math::Add(*hh, DequantWith<kInt8>(s, s_so[b], sm[sl.ws_out + ol], sm[sl.b_out + ol]));
      *hh = nv;
      p.h[b * d + row] = nv;
    });
    if (l + 1 < p.layers) grid_sync();  // D: h complete
  }
  CpAsyncWait<0>();
}

// ---- host side ---------------------------------------------------------------------------------

struct DeviceLimits {
  int sms = 0;
  int smem_optin = 0;
};
StatusOr<DeviceLimits> Limits() {
  static std::mutex mu;
  static std::map<int, DeviceLimits> known;
  int dev = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  std::lock_guard<std::mutex> lock(mu);
  if (auto it = known.find(dev); it != known.end()) return it->second;
  DeviceLimits l;
  MQ_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l.sms, cudaDevAttrMultiProcessorCount, dev));
  MQ_CUDA_RETURN_IF_ERROR(cudaDeviceGetAttribute(&l.smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  known.emplace(dev, l);
  return l;
}

// Raises the kernel's dynamic shared-memory limit to the device's opt-in maximum (once per
// kernel) and checks, once per size, that a block of `smem` bytes fits an SM. The limit is a
// per-function attribute: setting it to each launch's own size (as this did first) let a later
// launch of a larger layout that was already checked run against a smaller limit left by another
// layout, which the driver refuses as cudaErrorCooperativeLaunchTooLarge (the layouts differ by
// model shape and grid).
Status PrepareKernel(const void* fn, size_t smem, size_t max_dynamic) {
  static std::mutex mu;
  static std::map<const void*, size_t> limit_set;
  static std::map<std::pair<const void*, size_t>, bool> fits;
  std::lock_guard<std::mutex> lock(mu);
  if (smem > max_dynamic)
    return ResourceExhaustedError("persistent decode kernel: shared memory " + std::to_string(smem) + " B over the limit");
  if (limit_set.count(fn) == 0) {
    MQ_CUDA_RETURN_IF_ERROR(
        cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(max_dynamic)));
    limit_set.emplace(fn, max_dynamic);
  }
  if (fits.count({fn, smem}) != 0) return OkStatus();
  int blocks = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, fn, kThreads, smem));
  if (blocks < 1)
    return ResourceExhaustedError("persistent decode kernel does not fit on an SM (shared memory " + std::to_string(smem) +
                                  " B)");
  fits.emplace(std::make_pair(fn, smem), true);
  return OkStatus();
}

template <int kFmt, int kB>
Status Launch(const DecodePersistentParams& p, cudaStream_t stream) {
  const auto kernel = PersistentDecodeKernel<kFmt, kB>;
  MQ_ASSIGN_OR_RETURN(DeviceLimits lim, Limits());
  cudaFuncAttributes attr{};
  MQ_CUDA_RETURN_IF_ERROR(cudaFuncGetAttributes(&attr, kernel));
  hd::PersistShape s;
  s.d = p.d, s.E = p.E, s.N = p.N, s.R = p.R;
  s.ld_in = p.ld_in, s.ld_x = p.ld_x, s.ld_dt = p.ld_dt, s.ld_out = p.ld_out;
  s.K = p.K, s.fmt = kFmt, s.B = kB, s.hadamard = p.hadamard;
  const int grid = p.grid > 0 && p.grid < lim.sms ? p.grid : lim.sms;
  s.grid = grid;
  const int64_t max_dynamic = static_cast<int64_t>(lim.smem_optin) - static_cast<int64_t>(attr.sharedSizeBytes);
  const hd::PersistSmemLayout lay = hd::MakePersistSmemLayout(s, max_dynamic);
  if (!lay.ok)
    return UnimplementedError("persistent decode kernel: a weight row or a block's per-channel data (grid " +
                              std::to_string(grid) + ") does not fit shared memory");
  MQ_RETURN_IF_ERROR(PrepareKernel(reinterpret_cast<const void*>(kernel), static_cast<size_t>(lay.total),
                                   static_cast<size_t>(max_dynamic)));
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(static_cast<unsigned>(grid));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = static_cast<size_t>(lay.total);
  cfg.stream = stream;
  cudaLaunchAttribute la[1];
  la[0].id = cudaLaunchAttributeCooperative;
  la[0].val.cooperative = 1;
  cfg.attrs = la;
  cfg.numAttrs = 1;
  MQ_CUDA_RETURN_IF_ERROR(cudaLaunchKernelEx(&cfg, kernel, p, s, lay));
  return OkStatus();
}

template <int kFmt>
Status LaunchFormat(const DecodePersistentParams& p, cudaStream_t stream) {
  if (p.B == 1) return Launch<kFmt, 1>(p, stream);
  if (p.B == 2) return Launch<kFmt, 2>(p, stream);
  return Launch<kFmt, 4>(p, stream);
}

}  // namespace

Status LaunchDecodePersistent(const DecodePersistentParams& p, cudaStream_t stream) {
  if (p.B < 1 || p.B > kPersistentMaxBatch)
    return InvalidArgumentError("persistent decode: batch must be in [1, " + std::to_string(kPersistentMaxBatch) + "]");
  if (p.layers < 1 || p.ld_dt < p.R ||
      !hd::PersistShapeSupported(p.d, p.E, p.N, p.K, p.ld_in, p.ld_x, p.ld_dt, p.ld_out))
    return UnimplementedError("persistent decode: need state 16, conv kernel in [2, 8], d % 4 == 0, d_inner % " +
                              std::to_string(hd::kPersistXUnit) + " == 0 and linear rows padded to 16 elements");
  if (p.int4 && !p.int8) return InvalidArgumentError("persistent decode: packed 4-bit weights need INT8 activations");
  if (p.layer == nullptr || p.slots == nullptr || p.h == nullptr || p.u == nullptr ||
      p.y == nullptr || p.umax == nullptr || p.xacc == nullptr || p.barrier == nullptr)
    return InvalidArgumentError("persistent decode: missing buffers");
  if (p.grid < 0) return InvalidArgumentError("persistent decode: grid must be ≥ 0");
  if (p.int4) return LaunchFormat<hd::kPersistW4>(p, stream);
  if (p.int8) return LaunchFormat<hd::kPersistI8>(p, stream);
  return LaunchFormat<hd::kPersistF16>(p, stream);
}

}  // namespace mq::cuda
