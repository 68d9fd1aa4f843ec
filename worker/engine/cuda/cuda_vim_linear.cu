#include "cuda/cuda_vim_linear.h"

#include <cmath>
#include <string>
#include <vector>

#include "cuda/act_io.cuh"
#include "cuda/cuda_check.h"
#include "cuda/hd_math.h"
#include "cuda/kernel_params.h"
#include "quant/hadamard.h"
#include "quant/online_rotation.h"

namespace mq::cuda::vim {
namespace {

constexpr int kThreads = 256;
constexpr int kRowThreads = 128;

unsigned GridFor(int64_t n) {
  const int64_t blocks = (n + kThreads - 1) / kThreads;
  return static_cast<unsigned>(blocks < (int64_t{1} << 22) ? blocks : (int64_t{1} << 22));
}

#define MQ_VIM_GRID_STRIDE(i, n) \
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += static_cast<int64_t>(gridDim.x) * blockDim.x)

// x16[t, c] = half(x[t, c]) for c < in, zero up to ld.
__global__ void CastHalfKernel(const float* __restrict__ x, int64_t ld_x, int64_t tokens, int64_t in, int64_t ld,
                               __half* __restrict__ x16) {
  MQ_VIM_GRID_STRIDE(i, tokens * ld) {
    const int64_t t = i / ld, c = i - t * ld;
    x16[i] = __float2half_rn(c < in ? x[t * ld_x + c] : 0.0f);
  }
}

// Per-token (or static) INT8 of row blockIdx.x: model/linear.cc's QuantizeRowsPerToken /
// QuantizeRowsStatic arithmetic (act_io.cuh QuantizeRow), zero padding up to q.ld.
__global__ void __launch_bounds__(kRowThreads) QuantizeRowsKernel(const float* __restrict__ x, int64_t ld_x,
                                                                  int64_t in, QuantOut q) {
  __shared__ float scratch[32];
  const int64_t t = blockIdx.x;
  const float* row = x + t * ld_x;
  float amax = 0.0f;
  if (q.static_scale <= 0.0f)
    for (int64_t c = threadIdx.x; c < in; c += blockDim.x) amax = fmaxf(amax, fabsf(row[c]));
  amax = BlockMax(amax, scratch);
  QuantizeRow(row, in, amax, q, t);
}

// y[t, o] = acc·s_x[t]·s_w[o] (+ b[o]), each operation rounded on its own (no FMA contraction):
// the CPU's Linear::Forward bit for bit on the same codes.
__global__ void DequantizeKernel(const int32_t* __restrict__ acc, int64_t ld_acc, const float* __restrict__ sx,
                                 const float* __restrict__ sw, const float* __restrict__ bias, int64_t tokens,
                                 int64_t out, float* __restrict__ y, int64_t ld_y) {
  MQ_VIM_GRID_STRIDE(i, tokens * out) {
    const int64_t t = i / out, o = i - t * out;
    float v = __fmul_rn(__fmul_rn(static_cast<float>(acc[t * ld_acc + o]), sx[t]), sw[o]);
    if (bias != nullptr) v = __fadd_rn(v, bias[o]);
    y[t * ld_y + o] = v;
  }
}

__global__ void AddBiasKernel(float* __restrict__ y, int64_t ld_y, int64_t tokens, int64_t out,
                              const float* __restrict__ bias) {
  MQ_VIM_GRID_STRIDE(i, tokens * out) {
    const int64_t t = i / out, o = i - t * out;
    y[t * ld_y + o] += bias[o];
  }
}

template <typename T>
Status ToDevice(DeviceBuffer<T>* dst, const std::vector<T>& v) {
  MQ_ASSIGN_OR_RETURN(*dst, DeviceBuffer<T>::FromHost(v));
  return OkStatus();
}

template <typename T>
Status Grow(DeviceBuffer<T>* b, int64_t n) {
  if (static_cast<int64_t>(b->size()) >= n) return OkStatus();
  MQ_ASSIGN_OR_RETURN(*b, DeviceBuffer<T>::Allocate(static_cast<size_t>(n)));
  return OkStatus();
}

}  // namespace

const char* LinearModeName(LinearMode m) {
  switch (m) {
    case LinearMode::kF32: return "fp32";
    case LinearMode::kF16: return "fp16";
    case LinearMode::kInt8: return "int8";
  }
  return "?";
}

StatusOr<std::unique_ptr<VimGemms>> VimGemms::Create() {
  std::unique_ptr<VimGemms> g(new VimGemms());
  MQ_CUBLAS_RETURN_IF_ERROR(cublasCreate(&g->blas_));
  // FP32 math, never TF32: the float path is checked against the float32 reference at 1e-4.
  MQ_CUBLAS_RETURN_IF_ERROR(cublasSetMathMode(g->blas_, CUBLAS_DEFAULT_MATH));
  MQ_ASSIGN_OR_RETURN(g->lt_, CublasLtGemm::Create());
  return std::move(g);
}

VimGemms::~VimGemms() {
  lt_.reset();
  if (blas_ != nullptr) cublasDestroy(blas_);
}

StatusOr<CudaVimLinear> CudaVimLinear::Upload(const Linear& src, LinearMode float_mode, const std::string& name) {
  CudaVimLinear l;
  l.in_ = src.in_features, l.out_ = src.out_features;
  if (l.in_ < 1 || l.out_ < 1) return InvalidArgumentError(name + ": empty linear layer");
  l.ld_in_ = hd::RoundUp(l.in_, 16);
  l.out_pad_ = hd::RoundUp(l.out_, 4);
  if (!src.bias.empty()) {
    if (static_cast<int64_t>(src.bias.size()) != l.out_) return InvalidArgumentError(name + ": bias size");
    MQ_RETURN_IF_ERROR(ToDevice(&l.bias, src.bias));
  }
  if (src.quant.has_value()) {
    l.mode_ = LinearMode::kInt8;
    const LinearQuant& q = *src.quant;
    if (static_cast<int64_t>(q.qweight.size()) != l.out_ * l.in_ || static_cast<int64_t>(q.weight_scale.size()) != l.out_)
      return InvalidArgumentError(name + ": quantized weight or scale size does not match the layer");
    if (q.act_mode == ActScaleMode::kPerTensorStatic) {
      if (!(q.act_scale > 0.0f) || !std::isfinite(q.act_scale))
        return InvalidArgumentError(name + ": static activation scale must be positive and finite");
      l.act_static_scale = q.act_scale;
    }
    std::vector<int8_t> w(static_cast<size_t>(l.out_pad_ * l.ld_in_), 0);
    for (int64_t o = 0; o < l.out_; ++o)
      for (int64_t k = 0; k < l.in_; ++k) w[o * l.ld_in_ + k] = q.qweight[o * l.in_ + k];
    std::vector<float> ws(static_cast<size_t>(l.out_pad_), 1.0f);
    for (int64_t o = 0; o < l.out_; ++o) ws[o] = q.weight_scale[o];
    MQ_RETURN_IF_ERROR(ToDevice(&l.w8, w));
    MQ_RETURN_IF_ERROR(ToDevice(&l.wscale, ws));
    if (src.input_transform) {
      const auto* h = dynamic_cast<const quant::HadamardRowTransform*>(src.input_transform.get());
      if (h == nullptr)
        return UnimplementedError(name + ": only Hadamard online transforms run on the GPU, got " +
                                  src.input_transform->Describe());
      const quant::RandomHadamard& had = h->hadamard();
      if (had.size() != l.in_) return InvalidArgumentError(name + ": online Hadamard size does not match the layer");
      // The kernel's form (CudaMambaModel::UploadHadamard): D/√n per element, then the m×m mix
      // stored transposed after the 2^k butterflies.
      const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(l.in_)));
      std::vector<float> scale(static_cast<size_t>(l.in_));
      for (int64_t i = 0; i < l.in_; ++i) scale[i] = had.signs()[i] * inv;
      const int hm = had.factors().m;
      MQ_ASSIGN_OR_RETURN(std::vector<int8_t> small, quant::SmallHadamard(hm));
      std::vector<int8_t> mix(static_cast<size_t>(hm * hm));
      for (int oo = 0; oo < hm; ++oo)
        for (int i = 0; i < hm; ++i) mix[oo * hm + i] = small[i * hm + oo];
      MQ_RETURN_IF_ERROR(ToDevice(&l.had_scale, scale));
      MQ_RETURN_IF_ERROR(ToDevice(&l.had_mix, mix));
      l.had_m = hm;
      l.had_p = had.factors().pow2;
    }
    return StatusOr<CudaVimLinear>(std::move(l));
  }
  if (src.input_transform) return UnimplementedError(name + ": an online transform on a float linear is not supported");
  if (static_cast<int64_t>(src.weight.size()) != l.out_ * l.in_)
    return InvalidArgumentError(name + ": weight size does not match the layer");
  l.mode_ = float_mode == LinearMode::kF16 ? LinearMode::kF16 : LinearMode::kF32;
  if (l.mode_ == LinearMode::kF32) {
    MQ_RETURN_IF_ERROR(ToDevice(&l.w32, src.weight));
  } else {
    std::vector<__half> w(static_cast<size_t>(l.out_ * l.ld_in_), __float2half_rn(0.0f));
    for (int64_t o = 0; o < l.out_; ++o)
      for (int64_t k = 0; k < l.in_; ++k) w[o * l.ld_in_ + k] = __float2half_rn(src.weight[o * l.in_ + k]);
    MQ_RETURN_IF_ERROR(ToDevice(&l.w16, w));
  }
  return StatusOr<CudaVimLinear>(std::move(l));
}

uint64_t CudaVimLinear::bytes() const {
  return w32.bytes() + bias.bytes() + w16.bytes() + w8.bytes() + wscale.bytes() + had_scale.bytes() + had_mix.bytes();
}

Status CudaVimLinear::Reserve(int64_t tokens, LinearScratch* s) const {
  if (mode_ == LinearMode::kF16) MQ_RETURN_IF_ERROR(Grow(&s->x16, tokens * ld_in_));
  if (mode_ == LinearMode::kInt8) {
    MQ_RETURN_IF_ERROR(Grow(&s->x8, tokens * ld_in_));
    MQ_RETURN_IF_ERROR(Grow(&s->sx, tokens));
    MQ_RETURN_IF_ERROR(Grow(&s->acc, tokens * out_pad_));
    if (!had_scale.empty()) MQ_RETURN_IF_ERROR(Grow(&s->xt, tokens * in_));
  }
  return OkStatus();
}

Status CudaVimLinear::Forward(const float* x, int64_t ld_x, int64_t tokens, float* y, int64_t ld_y, VimGemms& g,
                              LinearScratch& s, cudaStream_t stream, bool add_bias) const {
  if (tokens <= 0) return OkStatus();
  if (ld_x < in_ || ld_y < out_) return InvalidArgumentError("CudaVimLinear: leading dimension too short");
  if (tokens > (int64_t{1} << 31) - 1) return InvalidArgumentError("CudaVimLinear: too many rows");
  switch (mode_) {
    case LinearMode::kF32: {
      MQ_CUBLAS_RETURN_IF_ERROR(cublasSetStream(g.blas(), stream));
      const float alpha = 1.0f, beta = 0.0f;
      // Column-major view: yᵀ[out, tokens] = W[out, in] (stored as [in, out], transposed) · xᵀ[in, tokens].
      MQ_CUBLAS_RETURN_IF_ERROR(cublasSgemm(g.blas(), CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(out_),
                                            static_cast<int>(tokens), static_cast<int>(in_), &alpha, w32.get(),
                                            static_cast<int>(in_), x, static_cast<int>(ld_x), &beta, y,
                                            static_cast<int>(ld_y)));
      break;
    }
    case LinearMode::kF16: {
      if (static_cast<int64_t>(s.x16.size()) < tokens * ld_in_) return FailedPreconditionError("CudaVimLinear: scratch not reserved");
      CastHalfKernel<<<GridFor(tokens * ld_in_), kThreads, 0, stream>>>(x, ld_x, tokens, in_, ld_in_, s.x16.get());
      MQ_CUDA_CHECK_LAUNCH("CastHalfKernel");
      MQ_RETURN_IF_ERROR(g.lt().F16(w16.get(), ld_in_, s.x16.get(), ld_in_, y, true, ld_y, out_, tokens, ld_in_, stream));
      break;
    }
    case LinearMode::kInt8: {
      if (static_cast<int64_t>(s.x8.size()) < tokens * ld_in_ || static_cast<int64_t>(s.acc.size()) < tokens * out_pad_ ||
          static_cast<int64_t>(s.sx.size()) < tokens)
        return FailedPreconditionError("CudaVimLinear: scratch not reserved");
      QuantOut q;
      q.q = s.x8.get(), q.ld = ld_in_, q.scale = s.sx.get(), q.static_scale = act_static_scale;
      if (!had_scale.empty()) {
        const float* xc = x;
        if (ld_x != in_) {  // the Hadamard kernel reads contiguous rows
          if (static_cast<int64_t>(s.xt.size()) < tokens * in_) return FailedPreconditionError("CudaVimLinear: scratch not reserved");
          MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy2DAsync(s.xt.get(), in_ * sizeof(float), x, ld_x * sizeof(float),
                                                    in_ * sizeof(float), tokens, cudaMemcpyDeviceToDevice, stream));
          xc = s.xt.get();
        }
        HadamardQuantParams hp;
        hp.x = xc, hp.tokens = tokens, hp.n = in_, hp.m = had_m, hp.p = had_p;
        hp.scale = had_scale.get(), hp.mix = had_mix.get(), hp.quant = q;
        MQ_RETURN_IF_ERROR(LaunchHadamardQuant(hp, stream));
      } else {
        QuantizeRowsKernel<<<static_cast<unsigned>(tokens), kRowThreads, 0, stream>>>(x, ld_x, in_, q);
        MQ_CUDA_CHECK_LAUNCH("QuantizeRowsKernel");
      }
      MQ_RETURN_IF_ERROR(g.lt().Int8(w8.get(), ld_in_, s.x8.get(), ld_in_, s.acc.get(), out_pad_, out_pad_, tokens,
                                     ld_in_, stream));
      DequantizeKernel<<<GridFor(tokens * out_), kThreads, 0, stream>>>(s.acc.get(), out_pad_, s.sx.get(), wscale.get(),
                                                                          add_bias ? bias.get() : nullptr, tokens, out_,
                                                                          y, ld_y);
      MQ_CUDA_CHECK_LAUNCH("DequantizeKernel");
      return OkStatus();
    }
  }
  if (add_bias && !bias.empty()) {
    AddBiasKernel<<<GridFor(tokens * out_), kThreads, 0, stream>>>(y, ld_y, tokens, out_, bias.get());
    MQ_CUDA_CHECK_LAUNCH("AddBiasKernel");
  }
  return OkStatus();
}

}  // namespace mq::cuda::vim
