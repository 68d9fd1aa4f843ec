#include "cuda/cuda_vim_kernels.h"

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/cuda_vim_math.h"

namespace mq::cuda::vim {
namespace {

constexpr int kThreads = 256;
constexpr int kScanThreads = 128;  // channels of one sequence per scan block
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

// One block a row: the add written back, the float64 sum of squares, then the normalized row.
__global__ void __launch_bounds__(kNormThreads) ResidualRmsNormKernel(ResidualRmsNormParams p) {
  __shared__ double scratch[32];
  const int64_t i = blockIdx.x;
  const int64_t r = i * p.row_stride + p.row_offset;
  float* h = p.h + r * p.D;
  double ss = 0.0;
  for (int64_t c = threadIdx.x; c < p.D; c += blockDim.x) {
    float x = h[c];
    if (p.add != nullptr) {
      x += p.add[r * p.D + c];
      h[c] = x;
    }
    ss += static_cast<double>(x) * x;
  }
  ss = BlockSum(ss, scratch);
  const float inv = RmsInv(ss, p.D, p.eps);
  float* out = p.out + i * p.D;
  for (int64_t c = threadIdx.x; c < p.D; c += blockDim.x) out[c] = RmsOut(h[c], inv, p.gamma[c]);
}

__global__ void BiConvKernel(BiConvParams p) {
  const int64_t n = 2 * p.batch * p.L * p.E;
  MQ_VIM_GRID_STRIDE(i, n) {
    const int64_t row = i / p.E, e = i - row * p.E;
    const int64_t seq = row / p.L, t = row - seq * p.L;
    const int dir = seq >= p.batch ? 1 : 0;
    const int64_t b = seq - dir * p.batch;
    p.u[i] = ConvSilu(p.x, p.ld_x, p.w[dir] + e * p.K, p.bias[dir][e], dir, b, t, e, p.L, p.K);
  }
}

// One thread a channel of one branch sequence (blockIdx.y), its kN states in registers, time
// serial. Threads of a warp take consecutive channels: u, δ and y are coalesced, B and C are
// the same address for the whole warp (a broadcast).
template <int kN>
__global__ void __launch_bounds__(kScanThreads) BiScanKernel(BiScanParams p) {
  const int64_t e = static_cast<int64_t>(blockIdx.x) * kScanThreads + threadIdx.x;
  const int64_t seq = blockIdx.y;
  if (e >= p.E) return;
  const int dir = seq >= p.batch ? 1 : 0;
  float a[kN], h[kN];
#pragma unroll
  for (int n = 0; n < kN; ++n) {
    a[n] = p.A[dir][e * kN + n];
    h[n] = 0.0f;
  }
  const float d = p.D[dir][e];
  for (int64_t t = 0; t < p.L; ++t) {
    const int64_t row = seq * p.L + t;
    const float dt = Softplus(p.delta[row * p.E + e]);
    const float u = p.u[row * p.E + e];
    const float* bc = p.dbc + row * p.ld_dbc + p.R;
    float B[kN], C[kN];
#pragma unroll
    for (int n = 0; n < kN; ++n) {
      B[n] = __ldg(bc + n);
      C[n] = __ldg(bc + kN + n);
    }
    p.y[row * p.E + e] = ScanStep<kN>(h, a, dt, u, d, B, C);
  }
}

__global__ void GateKernel(GateParams p) {
  const int64_t n = p.batch * p.L * p.E;
  MQ_VIM_GRID_STRIDE(i, n) {
    const int64_t row = i / p.E, e = i - row * p.E;
    const int64_t b = row / p.L, t = row - b * p.L;
    const float yf = p.y[i];
    const float yb = p.y[BranchRow(1, b, t, p.batch, p.L) * p.E + e];
    p.g[i] = Gate(yf, yb, p.z[row * p.ld_z + e], p.gate_scale, e, p.out_scale);
  }
}

}  // namespace

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
  if (p.rows > (int64_t{1} << 31) - 1) return InvalidArgumentError("ResidualRmsNorm: too many rows");
  ResidualRmsNormKernel<<<static_cast<unsigned>(p.rows), kNormThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("ResidualRmsNormKernel");
  return OkStatus();
}

Status LaunchBiConv(const BiConvParams& p, cudaStream_t stream) {
  const int64_t n = 2 * p.batch * p.L * p.E;
  if (n <= 0) return OkStatus();
  BiConvKernel<<<GridFor(n), kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("BiConvKernel");
  return OkStatus();
}

Status LaunchBiScan(const BiScanParams& p, cudaStream_t stream) {
  if (p.batch <= 0 || p.E <= 0) return OkStatus();
  if (p.N != kScanState) return UnimplementedError("CUDA Vim scan: d_state must be 16, got " + std::to_string(p.N));
  if (2 * p.batch > 65535) return InvalidArgumentError("CUDA Vim scan: at most 32767 images a launch");
  const dim3 grid(static_cast<unsigned>((p.E + kScanThreads - 1) / kScanThreads), static_cast<unsigned>(2 * p.batch));
  BiScanKernel<kScanState><<<grid, kScanThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("BiScanKernel");
  return OkStatus();
}

Status LaunchGate(const GateParams& p, cudaStream_t stream) {
  const int64_t n = p.batch * p.L * p.E;
  if (n <= 0) return OkStatus();
  GateKernel<<<GridFor(n), kThreads, 0, stream>>>(p);
  MQ_CUDA_CHECK_LAUNCH("GateKernel");
  return OkStatus();
}

}  // namespace mq::cuda::vim
