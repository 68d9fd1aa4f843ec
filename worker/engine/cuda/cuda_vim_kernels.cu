#include "cuda/cuda_vim_kernels.h"

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_vim_math.h"

namespace mq::cuda::vim {
namespace {

constexpr int kThreads = 256;
constexpr int kScanThreads = 128;  // channels (× lanes) of one sequence a scan block
constexpr int kRowThreads = 128;   // row kernels (conv, gate): threads over the channels
constexpr int kNormThreads = 256;

unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t{1} << 22) ? blocks : (int64_t{1} << 22));
}

#define MQ_VIM_GRID_STRIDE(i, n) \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

__global__ void PatchIm2colKernel(PatchIm2colParams p) {
  const int64_t M = p.G * p.G, cpp = p.C * p.P * p.P, n = p.batch * M * p.ld;
  MQ_VIM_GRID_STRIDE(i, n) {
    const int64_t r = i / p.ld, k = i - r * p.ld;
    const int64_t b = r / M, g = r - b * M;
    p.cols[i] = k < cpp ? p.images[PatchPixel(b, g, k, p.C, p.H, p.P, p.S, p.G)] : 0.0f;
  }
}

__global__ void AssembleTokensKernel(AssembleTokensParams p) {
  const int64_t n = p.batch * p.L * p.D;
  MQ_VIM_GRID_STRIDE(i, n) {
    const int64_t row = i / p.D, d = i - row * p.D;
    const int64_t b = row / p.L, t = row - b * p.L;
    const int64_t src = PatchRowOfToken(b, t, p.M, p.cls);
    const float v = src < 0 ? p.cls_token[d] : p.tok[src * p.D + d];
    p.res[i] = v + p.pos_embed[t * p.D + d];
  }
}

// One warp a row (kNormThreads / 32 rows a block): the add written back, the float64 sum of
// squares (lane l takes columns l, l + 32, …; then the XOR-shuffle tree), the normalized row.
__global__ void __launch_bounds__(kNormThreads) ResidualRmsNormKernel(ResidualRmsNormParams p) {
  const int lane = threadIdx.x & 31;
  const int64_t i = static_cast<int64_t>(blockIdx.x) * (kNormThreads / 32) + (threadIdx.x >> 5);
  if (i >= p.rows) return;
  const int64_t r = i * p.row_stride + p.row_offset;
  float* h = p.h + r * p.D;
  double ss = 0.0;
  for (int64_t c = lane; c < p.D; c += 32) {
    float x = h[c];
    if (p.add != nullptr) {
      x += p.add[r * p.D + c];
      h[c] = x;
    }
    ss += static_cast<double>(x) * x;
  }
  ss = WarpSum(ss);
  const float inv = RmsInv(ss, p.D, p.eps);
  float* out = p.out + i * p.D;
  for (int64_t c = lane; c < p.D; c += 32) out[c] = RmsOut(h[c], inv, p.gamma[c]);
}

// One block a branch row (blockIdx.x = seq·L + t), threads over the channels.
__global__ void BiConvKernel(BiConvParams p) {
  const int64_t row = blockIdx.x;
  const int64_t seq = row / p.L, t = row - seq * p.L;
  const int dir = seq >= p.batch ? 1 : 0;
  const int64_t b = seq - dir * p.batch;
  const float* w = dir ? p.w[1] : p.w[0];
  const float* bias = dir ? p.bias[1] : p.bias[0];
  for (int64_t e = threadIdx.x; e < p.E; e += blockDim.x)
    p.u[row * p.E + e] = ConvSilu(p.x, p.ld_x, w + e * p.K, bias[e], dir, b, t, e, p.L, p.K);
}

// kLanes lanes a channel of one branch sequence (blockIdx.y), each with kN / kLanes
// states in registers; time serial in chunks of kChunk steps: the block stages the chunk's B and
// C (the same for every channel) in shared memory and each thread its δ and u in registers, all
// loads issued together, then runs the chunk's steps. u, δ and y are coalesced.
template <int kN, int kChunk, int kLanes>
__global__ void __launch_bounds__(kScanThreads) BiScanKernel(BiScanParams p) {
  constexpr int kNpt = kN / kLanes;
  __shared__ float s_bc[kChunk][2 * kN];
  const int sub = threadIdx.x % kLanes;
  const int64_t e = static_cast<int64_t>(blockIdx.x) * (kScanThreads / kLanes) + threadIdx.x / kLanes;
  const int64_t seq = blockIdx.y;
  const bool active = e < p.E;
  const int dir = seq >= p.batch ? 1 : 0;
  const float* A2 = dir ? p.A2[1] : p.A2[0];
  const float* dt_bias = dir ? p.dt_bias[1] : p.dt_bias[0];
  float a2[kNpt], h[kNpt];
#pragma unroll
  for (int n = 0; n < kNpt; ++n) {
    a2[n] = active ? A2[e * kN + sub * kNpt + n] : 0.0f;
    h[n] = 0.0f;
  }
  const float d = active ? (dir ? p.D[1] : p.D[0])[e] : 0.0f;
  const float bias = active && dt_bias != nullptr ? dt_bias[e] : 0.0f;
  for (int64_t t0 = 0; t0 < p.L; t0 += kChunk) {
    const int steps = static_cast<int>(p.L - t0 < kChunk ? p.L - t0 : kChunk);
    __syncthreads();  // the previous chunk's B and C are consumed
    for (int i = threadIdx.x; i < steps * 2 * kN; i += blockDim.x) {
      const int st = i / (2 * kN), j = i - st * 2 * kN;
      s_bc[st][j] = p.dbc[(seq * p.L + t0 + st) * p.ld_dbc + p.R + j];
    }
    float dl[kChunk], uu[kChunk];
#pragma unroll
    for (int st = 0; st < kChunk; ++st) {
      const int64_t row = seq * p.L + t0 + st;
      dl[st] = active && st < steps ? p.delta[row * p.E + e] : 0.0f;
      uu[st] = active && st < steps ? p.u[row * p.E + e] : 0.0f;
    }
    __syncthreads();
#pragma unroll
    for (int st = 0; st < kChunk; ++st) {
      if (st < steps) {  // uniform across the block: every lane shuffles
        const float dt = Softplus(dl[st] + bias);
        const float mine = ScanPartial<kNpt>(h, a2, dt, dt * uu[st], s_bc[st] + sub * kNpt, s_bc[st] + kN + sub * kNpt);
        // Gather the channel's parts in lane order, then add them in ScanOutput's order.
        float part[kLanes];
        if constexpr (kLanes == 1) {
          part[0] = mine;
        } else {
#pragma unroll
          for (int k = 0; k < kLanes; ++k) part[k] = __shfl_sync(0xffffffffu, mine, (threadIdx.x & ~(kLanes - 1)) + k);
        }
        if (active && sub == 0) p.y[(seq * p.L + t0 + st) * p.E + e] = ScanOutput<kLanes>(part, d, uu[st]);
      }
    }
  }
}

__global__ void FirstNonFiniteKernel(const float* __restrict__ x, int64_t n, unsigned long long* first_bad) {
  MQ_VIM_GRID_STRIDE(i, n) {
    if (!isfinite(x[i])) atomicMin(first_bad, static_cast<unsigned long long>(i));
  }
}

// One block a token row (blockIdx.x = b·L + t), threads over the channels.
__global__ void GateKernel(GateParams p) {
  const int64_t row = blockIdx.x;
  const int64_t b = row / p.L, t = row - b * p.L;
  const int64_t rb = BranchRow(1, b, t, p.batch, p.L);
  for (int64_t e = threadIdx.x; e < p.E; e += blockDim.x)
    p.g[row * p.E + e] = Gate(p.y[row * p.E + e], p.y[rb * p.E + e], p.z[row * p.ld_z + e], p.gate_scale, e, p.out_scale);
}

}  // namespace

Status LaunchFirstNonFinite(const float* x, int64_t n, unsigned long long* first_bad, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  FirstNonFiniteKernel<<<GridFor(n), kThreads, 0, stream>>>(x, n, first_bad);
  MQ_CUDA_CHECK_LAUNCH("FirstNonFiniteKernel");
  return OkStatus();
}

Status LaunchPatchIm2col(const PatchIm2colParams& p, cudaStream_t stream) {
  const int64_t n = p.batch * p.G * p.G * p.ld;
  if (n <= 0) return OkStatus();
  if (p.ld < p.C * p.P * p.P) return InvalidArgumentError("PatchIm2col: ld shorter than a patch");
  PatchIm2colKernel<<<GridFor(n), kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("PatchIm2colKernel");
  return OkStatus();
}

Status LaunchAssembleTokens(const AssembleTokensParams& p, cudaStream_t stream) {
  const int64_t n = p.batch * p.L * p.D;
  if (n <= 0) return OkStatus();
  if (p.L != p.M + 1 || p.cls < 0 || p.cls > p.M) return InvalidArgumentError("AssembleTokens: bad sequence geometry");
  AssembleTokensKernel<<<GridFor(n), kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("AssembleTokensKernel");
  return OkStatus();
}

Status LaunchResidualRmsNorm(const ResidualRmsNormParams& p, cudaStream_t stream) {
  if (p.rows <= 0) return OkStatus();
  if (p.rows > (int64_t{1} << 34)) return InvalidArgumentError("ResidualRmsNorm: too many rows");
  const int64_t rows_per_block = kNormThreads / 32;
  ResidualRmsNormKernel<<<static_cast<unsigned>((p.rows + rows_per_block - 1) / rows_per_block), kNormThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("ResidualRmsNormKernel");
  return OkStatus();
}

Status LaunchBiConv(const BiConvParams& p, cudaStream_t stream) {
  const int64_t rows = 2 * p.batch * p.L;
  if (rows <= 0 || p.E <= 0) return OkStatus();
  if (rows > (int64_t{1} << 31) - 1) return InvalidArgumentError("BiConv: too many rows");
  BiConvKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("BiConvKernel");
  return OkStatus();
}

Status LaunchBiScan(const BiScanParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.E <= 0) return OkStatus();
  if (p.N != kScanState) return UnimplementedError("CUDA Vim scan: d_state must be 16, got " + std::to_string(p.N));
  if (2 * p.batch > 65535) return InvalidArgumentError("CUDA Vim scan: at most 32767 images a launch");
  const int lanes = ScanLanes(p.batch, p.E);
  const int64_t channels = kScanThreads / lanes;
  const dim3 grid(static_cast<unsigned>((p.E + channels - 1) / channels), static_cast<unsigned>(2 * p.batch));
  if (lanes == 1) {
    BiScanKernel<kScanState, kScanChunk, 1><<<grid, kScanThreads, 0, stream>>>(p);
  } else {
    BiScanKernel<kScanState, kScanChunk, 4><<<grid, kScanThreads, 0, stream>>>(p);
  }
  MQ_CUDA_CHECK_LAUNCH("BiScanKernel");
  return OkStatus();
}

Status LaunchGate(const GateParams& p, cudaStream_t stream) {
  const int64_t rows = p.batch * p.L;
  if (rows <= 0 || p.E <= 0) return OkStatus();
  if (rows > (int64_t{1} << 31) - 1) return InvalidArgumentError("Gate: too many rows");
  GateKernel<<<static_cast<unsigned>(rows), kRowThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("GateKernel");
  return OkStatus();
}

}  // namespace mq::cuda::vim
