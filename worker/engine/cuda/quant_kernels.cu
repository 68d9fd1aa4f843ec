#include "cuda/quant_kernels.h"

#include <cfloat>

#include "cuda/cuda_check.h"

namespace mq::cuda {
namespace {

constexpr int kColumnThreads = 256;
constexpr int64_t kRowsPerBlock = 64;  // rows one column-stats block reduces before its atomics
constexpr int kCompareThreads = 512;

__device__ __forceinline__ float ToFloat(__half v) { return __half2float(v); }
__device__ __forceinline__ float ToFloat(float v) { return v; }

template <typename T>
__global__ void ColumnStatsKernel(const T* __restrict__ x, int64_t ld, int64_t rows, int64_t cols,
                                  float* __restrict__ absmax, double* __restrict__ sum) {
  const int64_t j = static_cast<int64_t>(blockIdx.x) * kColumnThreads + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * kRowsPerBlock;
  const int64_t r1 = min(rows, r0 + kRowsPerBlock);
  float m = 0.0f, s = 0.0f;  // 64 values: a float partial sum, then float64 across blocks
  for (int64_t r = r0; r < r1; ++r) {
    const float v = ToFloat(x[r * ld + j]);
    m = fmaxf(m, fabsf(v));
    s += v;
  }
  // |x| ≥ 0: the float's bit pattern orders like the value, so an integer atomicMax works.
  atomicMax(reinterpret_cast<int*>(absmax + j), __float_as_int(m));
  atomicAdd(sum + j, static_cast<double>(s));
}

__global__ void WidenHalfKernel(const __half* __restrict__ x, int64_t ld, int64_t rows, int64_t cols,
                                double* __restrict__ out) {
  const int64_t n = rows * cols;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / cols, c = i - r * cols;
    out[i] = static_cast<double>(__half2float(x[r * ld + c]));
  }
}

__global__ void WidenFloatKernel(const float* __restrict__ x, int64_t n, double* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<double>(x[i]);
}

__global__ void NarrowDoubleKernel(const double* __restrict__ x, int64_t n, float* __restrict__ out) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    out[i] = static_cast<float>(x[i]);
}

// Block-wide reductions for kCompareThreads threads (scratch: one slot per warp).
struct MaxArg {
  float v;
  int64_t i;
};
__device__ MaxArg Better(MaxArg a, MaxArg b) {  // larger value; on ties the lower index (first maximum)
  return (b.v > a.v || (b.v == a.v && b.i < a.i)) ? b : a;
}
__device__ MaxArg BlockMaxArg(MaxArg a, MaxArg* scratch) {
  for (int o = 16; o > 0; o >>= 1) {
    MaxArg b{__shfl_xor_sync(0xffffffffu, a.v, o), __shfl_xor_sync(0xffffffffu, a.i, o)};
    a = Better(a, b);
  }
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = a;
  __syncthreads();
  a = scratch[0];
  for (int w = 1; w < kCompareThreads / 32; ++w) a = Better(a, scratch[w]);
  __syncthreads();
  return a;
}
__device__ double BlockSum(double v, double* scratch) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  double s = 0;
  for (int w = 0; w < kCompareThreads / 32; ++w) s += scratch[w];
  __syncthreads();
  return s;
}

__global__ void __launch_bounds__(kCompareThreads)
CompareRowsKernel(const float* __restrict__ ref, const float* __restrict__ cand, int64_t V,
                  const int32_t* __restrict__ targets, double* __restrict__ out) {
  __shared__ MaxArg s_arg[kCompareThreads / 32];
  __shared__ double s_sum[kCompareThreads / 32];
  const int64_t row = blockIdx.x;
  const int32_t target = targets[row];
  double* o = out + 4 * row;
  if (target < 0) {
    if (threadIdx.x < 4) o[threadIdx.x] = 0.0;
    return;
  }
  const float* r = ref + row * V;
  const float* c = cand + row * V;
  MaxArg mr{-FLT_MAX, V}, mc{-FLT_MAX, V};
  for (int64_t i = threadIdx.x; i < V; i += kCompareThreads) {
    mr = Better(mr, MaxArg{r[i], i});
    mc = Better(mc, MaxArg{c[i], i});
  }
  mr = BlockMaxArg(mr, s_arg);
  mc = BlockMaxArg(mc, s_arg);
  // One pass for both normalizers and Σ e^{r−max}(r − c): KL = Σ p_r (r − c) − lse_r + lse_c.
  double sr = 0, sc = 0, w = 0;
  for (int64_t i = threadIdx.x; i < V; i += kCompareThreads) {
    const float er = expf(r[i] - mr.v);
    sr += er;
    sc += expf(c[i] - mc.v);
    w += static_cast<double>(er) * (static_cast<double>(r[i]) - static_cast<double>(c[i]));
  }
  sr = BlockSum(sr, s_sum);
  sc = BlockSum(sc, s_sum);
  w = BlockSum(w, s_sum);
  if (threadIdx.x == 0) {
    const double lse_r = mr.v + log(sr), lse_c = mc.v + log(sc);
    o[0] = lse_r - r[target];
    o[1] = lse_c - c[target];
    o[2] = w / sr - lse_r + lse_c;
    o[3] = mr.i == mc.i ? 1.0 : 0.0;
  }
}

int GridFor(int64_t n, int threads) {
  return static_cast<int>(std::min<int64_t>((n + threads - 1) / threads, 65535 * 8));
}

template <typename T>
Status ColumnStats(const T* x, int64_t ld, int64_t rows, int64_t cols, float* absmax, double* sum, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return OkStatus();
  const int64_t row_blocks = (rows + kRowsPerBlock - 1) / kRowsPerBlock;
  if (row_blocks > 65535) return InvalidArgumentError("column stats: too many rows in one call");
  const dim3 grid(static_cast<unsigned>((cols + kColumnThreads - 1) / kColumnThreads), static_cast<unsigned>(row_blocks));
  ColumnStatsKernel<T><<<grid, kColumnThreads, 0, stream>>>(x, ld, rows, cols, absmax, sum);
  MQ_CUDA_CHECK_LAUNCH("ColumnStatsKernel");
  return OkStatus();
}

}  // namespace

Status LaunchColumnStats(const __half* x, int64_t ld, int64_t rows, int64_t cols, float* absmax, double* sum,
                         cudaStream_t stream) {
  return ColumnStats(x, ld, rows, cols, absmax, sum, stream);
}
Status LaunchColumnStats(const float* x, int64_t ld, int64_t rows, int64_t cols, float* absmax, double* sum,
                         cudaStream_t stream) {
  return ColumnStats(x, ld, rows, cols, absmax, sum, stream);
}

Status LaunchWidenHalf(const __half* x, int64_t ld, int64_t rows, int64_t cols, double* out, cudaStream_t stream) {
  if (rows <= 0 || cols <= 0) return OkStatus();
  WidenHalfKernel<<<GridFor(rows * cols, 256), 256, 0, stream>>>(x, ld, rows, cols, out);
  MQ_CUDA_CHECK_LAUNCH("WidenHalfKernel");
  return OkStatus();
}

Status LaunchWidenFloat(const float* x, int64_t n, double* out, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  WidenFloatKernel<<<GridFor(n, 256), 256, 0, stream>>>(x, n, out);
  MQ_CUDA_CHECK_LAUNCH("WidenFloatKernel");
  return OkStatus();
}

Status LaunchNarrowDouble(const double* x, int64_t n, float* out, cudaStream_t stream) {
  if (n <= 0) return OkStatus();
  NarrowDoubleKernel<<<GridFor(n, 256), 256, 0, stream>>>(x, n, out);
  MQ_CUDA_CHECK_LAUNCH("NarrowDoubleKernel");
  return OkStatus();
}

Status LaunchCompareRows(const float* reference, const float* candidate, int64_t V, const int32_t* targets,
                         int64_t rows, double* out, cudaStream_t stream) {
  if (rows <= 0) return OkStatus();
  if (V <= 0 || rows > 0x7fffffff) return InvalidArgumentError("compare rows: bad shape");
  CompareRowsKernel<<<static_cast<unsigned>(rows), kCompareThreads, 0, stream>>>(reference, candidate, V, targets, out);
  MQ_CUDA_CHECK_LAUNCH("CompareRowsKernel");
  return OkStatus();
}

}  // namespace mq::cuda
