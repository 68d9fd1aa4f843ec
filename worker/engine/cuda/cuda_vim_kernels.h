// The Vision Mamba kernels of the CUDA backend (cuda_vim_kernels.cu): everything of the Vim
// forward that is not a linear layer (cuda_vim_linear.h runs those). Float32 activations and
// float32 residual stream; the per-element arithmetic is cuda_vim_math.h's. One launcher per
// kernel, each enqueuing on `stream` and checking the launch.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "util/status.h"

namespace mq::cuda::vim {

// cols[b·M + g, 0..CPP) = the patch's pixels (cuda_vim_math.h PatchPixel), zero up to ld.
struct PatchIm2colParams {
  const float* images = nullptr;  // [B, C, H, H]
  float* cols = nullptr;          // [B·M, ld]
  int64_t batch = 0, C = 0, H = 0, P = 0, S = 0, G = 0, ld = 0;
};

// res[b·L + t] = (patch row, or cls_token at t = cls) + pos_embed[t]. `tok` holds the patch
// embedding with its bias already added.
struct AssembleTokensParams {
  const float* tok = nullptr;  // [B·M, D]
  const float* cls_token = nullptr;
  const float* pos_embed = nullptr;  // [L, D]
  float* res = nullptr;              // [B·L, D]
  int64_t batch = 0, M = 0, L = 0, D = 0, cls = 0;
};

// Fused add + RMSNorm: h[r] (+)= add[r] (written back when add is given), out[i] = rms(h[r]; γ)
// for output row i reading row r = i·row_stride + row_offset.
struct ResidualRmsNormParams {
  float* h = nullptr;            // [·, D]
  const float* add = nullptr;    // [·, D] or null
  const float* gamma = nullptr;  // [D]
  float* out = nullptr;          // [rows, D]
  int64_t rows = 0, D = 0, row_stride = 1, row_offset = 0;
  double eps = 1e-5;
};

// u[BranchRow(dir, b, t)] = SiLU(conv_dir(x)) for both branches.
struct BiConvParams {
  const float* x = nullptr;  // [B·L, ld_x]: in_proj output, x in columns [0, E)
  int64_t ld_x = 0;
  const float* w[2] = {nullptr, nullptr};     // [E, K] per branch
  const float* bias[2] = {nullptr, nullptr};  // [E]
  float* u = nullptr;                         // [2·B·L, E]
  int64_t batch = 0, L = 0, E = 0, K = 0;
};

// Selective scan of the 2·B branch sequences from h = 0: δ = softplus(delta + dt_bias), y = h·C + D·u.
struct BiScanParams {
  const float* u = nullptr;      // [2·B·L, E]
  const float* delta = nullptr;  // [2·B·L, E] dt_proj output without its bias
  const float* dt_bias[2] = {nullptr, nullptr};  // [E] per branch (dt_proj's bias, added here)
  const float* dbc = nullptr;    // [2·B·L, ld_dbc]: B at column R, C at column R + N
  int64_t ld_dbc = 0, R = 0;
  const float* A2[2] = {nullptr, nullptr};  // [E, N] = −exp(A_log)·log2 e per branch
  const float* D[2] = {nullptr, nullptr};  // [E]
  float* y = nullptr;                      // [2·B·L, E]
  int64_t batch = 0, L = 0, E = 0, N = 0;  // N must be 16
};

// g[b·L + t] = Gate(y_f, y_b (from its reversed row), z) (cuda_vim_math.h).
struct GateParams {
  const float* y = nullptr;   // [2·B·L, E]
  const float* z = nullptr;   // [B·L, ld_z] (in_proj output from column E)
  int64_t ld_z = 0;
  const float* gate_scale = nullptr;  // [E] or null
  float out_scale = 0.5f;
  float* g = nullptr;  // [B·L, E]
  int64_t batch = 0, L = 0, E = 0;
};

// first_bad = min(first_bad, i) over the non-finite x[i] (first_bad starts at UINT64_MAX).
Status LaunchFirstNonFinite(const float* x, int64_t n, unsigned long long* first_bad, cudaStream_t stream);

Status LaunchPatchIm2col(const PatchIm2colParams& p, cudaStream_t stream);
Status LaunchAssembleTokens(const AssembleTokensParams& p, cudaStream_t stream);
Status LaunchResidualRmsNorm(const ResidualRmsNormParams& p, cudaStream_t stream);
Status LaunchBiConv(const BiConvParams& p, cudaStream_t stream);
Status LaunchBiScan(const BiScanParams& p, cudaStream_t stream);
Status LaunchGate(const GateParams& p, cudaStream_t stream);

// The scan's supported state size (1 or 4 lanes a channel, cuda_vim_math.h ScanLanes; the states
// in registers), and the
// time steps a scan block stages at once (B and C in shared memory, δ and u in registers), so
// that the loads of a chunk overlap instead of each step waiting for its own.
inline constexpr int64_t kScanState = 16;
inline constexpr int kScanChunk = 16;

}  // namespace mq::cuda::vim
