#include "cuda/cuda_mamba_model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>

#include "cpu/parallel_for.h"
#include "cuda/cuda_check.h"
#include "cuda/decode_persistent_plan.h"
#include "cuda/hd_math.h"
#include "cuda/int4_kernels.h"
#include "cuda/kernel_params.h"
#include "cuda/skinny_gemm.h"
#include "model/int4_pack.h"
#include "model/step_math.h"
#include "quant/hadamard.h"
#include "quant/online_rotation.h"

namespace mq::cuda {
namespace {

int64_t Pad16(int64_t v) { return hd::RoundUp(v, 16); }

// Host float [rows, cols] → half [rows, ld] with zero padding (rows over the cores: the 2.8B shape
// converts 2.8e9 weights when a job's calibration model is built).
std::vector<__half> ToHalfPadded(const std::vector<float>& w, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<__half> out(static_cast<size_t>(rows * ld), __float2half_rn(0.0f));
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t c = 0; c < cols; ++c) out[r * ld + c] = __float2half_rn(w[r * cols + c]);
  });
  return out;
}
std::vector<int8_t> PadInt8(const std::vector<int8_t>& w, int64_t rows, int64_t cols, int64_t ld) {
  std::vector<int8_t> out(static_cast<size_t>(rows * ld), 0);
  cpu::ParallelFor(rows, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) std::copy_n(w.data() + r * cols, cols, out.data() + r * ld);
  });
  return out;
}

}  // namespace

// A linear layer on the device: FP16 weights, or INT8 weights with per-channel scales, or (W4A8)
// 4-bit weights packed as model/int4_pack.h lays them out, rows of ld/2 bytes.
struct CudaMambaModel::Linear {
  int64_t out = 0, in = 0, ld = 0;  // ld = in padded to 16
  DeviceBuffer<__half> w16;
  DeviceBuffer<int8_t> w8;
  DeviceBuffer<uint8_t> w4;         // [out, ld/2] packed (W4A8), instead of w8
  DeviceBuffer<float> wscale;       // [out] (INT8)
  float act_static_scale = 0.0f;    // > 0: per-tensor static activation scale
  DeviceBuffer<float> bias;         // [out] or empty
  int64_t bytes() const {
    return static_cast<int64_t>(w16.bytes() + w8.bytes() + w4.bytes() + wscale.bytes() + bias.bytes());
  }
};

struct CudaMambaModel::Layer {
  DeviceBuffer<float> norm, conv_w, conv_b, A2, D, gate_scale;
  Linear in_proj, x_proj, dt_proj, out_proj;
  // R2 online Hadamard before out_proj (INT8 path), or empty.
  DeviceBuffer<float> had_scale;
  DeviceBuffer<int8_t> had_mix;
  DeviceBuffer<uint32_t> had_neg;  // the mix's signs as bit masks (decode kernels)
  int had_m = 1;
  int64_t had_p = 1;
  // Scope `full`: fake-quantized conv input, INT8 h·C product, online R4 [N, N] (or empty).
  bool quant_conv_input = false, quant_output_product = false;
  DeviceBuffer<float> state_rot;
};

// Activation buffers, sized for options_.max_tokens tokens.
struct CudaMambaModel::Buffers {
  DeviceBuffer<float> h, dbc, u32, y32;
  DeviceBuffer<__half> xn16, xz16, u16, xp16, dl16, delta16, y16, hn16;
  DeviceBuffer<float> o32;
  DeviceBuffer<int8_t> xn8, u8, dl8, y8;
  DeviceBuffer<float> s_xn, s_u, s_dl, s_y;
  DeviceBuffer<int32_t> xz_acc, xp_acc, delta_acc, o_acc;
  DeviceBuffer<float> u0q;  // scope `full`: the fake-quantized conv input [T, E]
};

CudaMambaModel::~CudaMambaModel() {
  graphs_.clear();
  if (stream_.get() != nullptr) cudaStreamSynchronize(stream_.get());
}

Status CudaMambaModel::Init(const MambaConfig& c, bool int8, const CudaModelOptions& o) {
  MQ_RETURN_IF_ERROR(c.Validate());
  config_ = c;
  options_ = o;
  int8_ = int8;
  d_ = c.hidden_size, E_ = c.intermediate_size, N_ = c.state_size, R_ = c.time_step_rank, K_ = c.conv_kernel;
  V_ = c.vocab_size, layers_ = c.num_hidden_layers;
  dp_ = Pad16(d_), Ep_ = Pad16(E_), Rp_ = Pad16(R_);
  if (N_ != 16) return UnimplementedError("CUDA backend: state_size must be 16, got " + std::to_string(N_));
  if (K_ < 2 || K_ > 8) return UnimplementedError("CUDA backend: conv_kernel must be in [2, 8]");
  if ((R_ + 2 * N_) % 4 != 0 || E_ % 16 != 0 || d_ % 4 != 0)
    return UnimplementedError("CUDA backend: d_inner must be a multiple of 16, hidden and dt_rank + 2·state of 4");
  if (o.max_tokens < 1 || o.max_batch < 1 || o.num_slots < o.max_batch || o.max_logit_rows < 1)
    return InvalidArgumentError("CUDA backend: bad options (need num_slots ≥ max_batch ≥ 1)");
  if (o.state_dtype != StateDtype::kF32 && o.state_dtype != StateDtype::kF16 && o.state_dtype != StateDtype::kBF16 &&
      o.state_dtype != StateDtype::kInt8)
    return InvalidArgumentError("CUDA backend: unknown state dtype");
  MQ_ASSIGN_OR_RETURN(stream_, CudaStream::Create());
  MQ_ASSIGN_OR_RETURN(gemm_, CublasLtGemm::Create(o.workspace_bytes));
  layer_.resize(static_cast<size_t>(layers_));
  const int64_t slots = o.num_slots + 1;
  if (o.state_dtype == StateDtype::kF32) {
    MQ_ASSIGN_OR_RETURN(conv_state_, DeviceBuffer<float>::Allocate(static_cast<size_t>(slots * layers_ * E_ * (K_ - 1))));
    MQ_ASSIGN_OR_RETURN(ssm_state_, DeviceBuffer<float>::Allocate(static_cast<size_t>(slots * layers_ * E_ * N_)));
    MQ_RETURN_IF_ERROR(conv_state_.Zero(stream_.get()));
    MQ_RETURN_IF_ERROR(ssm_state_.Zero(stream_.get()));
  } else {
    const int64_t eb = state::DtypeBytes(o.state_dtype);
    MQ_ASSIGN_OR_RETURN(conv_state_q_, DeviceBuffer<uint8_t>::Allocate(static_cast<size_t>(slots * layers_ * E_ * (K_ - 1) * eb)));
    MQ_ASSIGN_OR_RETURN(ssm_state_q_, DeviceBuffer<uint8_t>::Allocate(static_cast<size_t>(slots * layers_ * E_ * N_ * eb)));
    MQ_RETURN_IF_ERROR(conv_state_q_.Zero(stream_.get()));
    MQ_RETURN_IF_ERROR(ssm_state_q_.Zero(stream_.get()));
    if (state::HasScale(o.state_dtype)) {
      MQ_ASSIGN_OR_RETURN(conv_scale_, DeviceBuffer<float>::Allocate(static_cast<size_t>(slots * layers_ * E_)));
      MQ_ASSIGN_OR_RETURN(ssm_scale_, DeviceBuffer<float>::Allocate(static_cast<size_t>(slots * layers_ * E_)));
      MQ_RETURN_IF_ERROR(conv_scale_.Zero(stream_.get()));
      MQ_RETURN_IF_ERROR(ssm_scale_.Zero(stream_.get()));
    }
  }
  MQ_ASSIGN_OR_RETURN(logits_, DeviceBuffer<float>::Allocate(static_cast<size_t>(o.max_logit_rows * V_)));
  MQ_ASSIGN_OR_RETURN(ids_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(o.max_tokens)));
  MQ_ASSIGN_OR_RETURN(slots_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(o.max_batch)));
  MQ_ASSIGN_OR_RETURN(dec_ids_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(o.max_batch)));
  MQ_ASSIGN_OR_RETURN(dec_slots_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(o.max_batch)));
  MQ_ASSIGN_OR_RETURN(finished_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(o.max_batch)));
  MQ_ASSIGN_OR_RETURN(out_tokens_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(max_decode_steps_ * o.max_batch)));
  MQ_ASSIGN_OR_RETURN(step_, DeviceBuffer<int32_t>::Allocate(2));
  std::vector<int32_t> identity(static_cast<size_t>(o.max_batch));
  for (size_t i = 0; i < identity.size(); ++i) identity[i] = static_cast<int32_t>(i);
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(dec_slots_.get(), identity.data(), identity.size() * 4, cudaMemcpyHostToDevice));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(slots_.get(), identity.data(), identity.size() * 4, cudaMemcpyHostToDevice));
  MQ_RETURN_IF_ERROR(dec_ids_.Zero(stream_.get()));
  MQ_RETURN_IF_ERROR(ResetDecodeCounters());
  return AllocateActivations();
}

Status CudaMambaModel::AllocateActivations() {
  buf_ = std::make_unique<Buffers>();
  Buffers& b = *buf_;
  const size_t T = static_cast<size_t>(options_.max_tokens);
  const size_t d = d_, E = E_, dbc = R_ + 2 * N_;
  auto f32 = [](DeviceBuffer<float>* x, size_t n) -> Status {
    MQ_ASSIGN_OR_RETURN(*x, DeviceBuffer<float>::Allocate(n));
    return OkStatus();
  };
  auto f16 = [](DeviceBuffer<__half>* x, size_t n) -> Status {
    MQ_ASSIGN_OR_RETURN(*x, DeviceBuffer<__half>::Allocate(n));
    return OkStatus();
  };
  auto i8 = [](DeviceBuffer<int8_t>* x, size_t n) -> Status {
    MQ_ASSIGN_OR_RETURN(*x, DeviceBuffer<int8_t>::Allocate(n));
    return OkStatus();
  };
  auto i32 = [](DeviceBuffer<int32_t>* x, size_t n) -> Status {
    MQ_ASSIGN_OR_RETURN(*x, DeviceBuffer<int32_t>::Allocate(n));
    return OkStatus();
  };
  MQ_RETURN_IF_ERROR(f32(&b.h, T * d));
  MQ_RETURN_IF_ERROR(f32(&b.dbc, T * dbc));
  MQ_RETURN_IF_ERROR(f16(&b.hn16, static_cast<size_t>(options_.max_logit_rows * dp_)));
  if (int8_) {
    MQ_RETURN_IF_ERROR(f32(&b.u32, T * E));
    MQ_RETURN_IF_ERROR(f32(&b.y32, T * E));
    MQ_RETURN_IF_ERROR(i8(&b.xn8, T * dp_));
    MQ_RETURN_IF_ERROR(i8(&b.u8, T * Ep_));
    MQ_RETURN_IF_ERROR(i8(&b.dl8, T * Rp_));
    MQ_RETURN_IF_ERROR(i8(&b.y8, T * Ep_));
    for (auto* s : {&b.s_xn, &b.s_u, &b.s_dl, &b.s_y}) MQ_RETURN_IF_ERROR(f32(s, T));
    MQ_RETURN_IF_ERROR(i32(&b.xz_acc, T * 2 * E));
    MQ_RETURN_IF_ERROR(i32(&b.xp_acc, T * dbc));
    MQ_RETURN_IF_ERROR(i32(&b.delta_acc, T * E));
    MQ_RETURN_IF_ERROR(i32(&b.o_acc, T * d));
  } else {
    MQ_RETURN_IF_ERROR(f16(&b.xn16, T * dp_));
    MQ_RETURN_IF_ERROR(f16(&b.xz16, T * 2 * E));
    MQ_RETURN_IF_ERROR(f16(&b.u16, T * Ep_));
    MQ_RETURN_IF_ERROR(f16(&b.xp16, T * dbc));
    MQ_RETURN_IF_ERROR(f16(&b.dl16, T * Rp_));
    MQ_RETURN_IF_ERROR(f16(&b.delta16, T * E));
    MQ_RETURN_IF_ERROR(f16(&b.y16, T * Ep_));
    MQ_RETURN_IF_ERROR(f32(&b.o32, T * d));
  }
  return OkStatus();
}

namespace {

template <typename T>
Status Upload(DeviceBuffer<T>* dst, const std::vector<T>& v) {
  MQ_ASSIGN_OR_RETURN(*dst, DeviceBuffer<T>::FromHost(v));
  return OkStatus();
}

}  // namespace

// The online Hadamard as the kernel applies it: D/√n per element, then the m×m ±1 mix (stored
// transposed) after the 2^k butterflies.
Status CudaMambaModel::UploadHadamard(Layer* L, const quant::RandomHadamard& had) {
  const int64_t n = had.size();
  const float inv = static_cast<float>(1.0 / std::sqrt(static_cast<double>(n)));
  std::vector<float> scale(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) scale[i] = had.signs()[i] * inv;
  const int hm = had.factors().m;
  MQ_ASSIGN_OR_RETURN(std::vector<int8_t> small, quant::SmallHadamard(hm));
  std::vector<int8_t> mix(static_cast<size_t>(hm * hm));
  for (int oo = 0; oo < hm; ++oo)
    for (int i = 0; i < hm; ++i) mix[oo * hm + i] = small[i * hm + oo];
  MQ_RETURN_IF_ERROR(Upload(&L->had_scale, scale));
  MQ_RETURN_IF_ERROR(Upload(&L->had_mix, mix));
  std::vector<uint32_t> neg(static_cast<size_t>(hm));
  for (int oo = 0; oo < hm; ++oo) neg[oo] = hd::MixNegMask(mix.data(), hm, oo);
  MQ_RETURN_IF_ERROR(Upload(&L->had_neg, neg));
  L->had_m = hm;
  L->had_p = had.factors().pow2;
  return OkStatus();
}

StatusOr<std::unique_ptr<CudaMambaModel>> CudaMambaModel::Create(const MambaWeights& w, const CudaModelOptions& o) {
  const bool int8 = w.layers.empty() ? false : w.layers[0].in_proj.quant.has_value();
  std::unique_ptr<CudaMambaModel> m(new CudaMambaModel());
  MQ_RETURN_IF_ERROR(m->Init(w.config, int8, o));
  // Weight widths are per layer (a w4a8 export may keep layers at 8 bits: quant/quantized_format.h
  // version 3); the four linears of a layer share their layer's, in_proj's.
  int weight_bits = 0;
  int64_t int4_scratch = 0;  // elements of the largest unpacked 4-bit linear
  if (w.lm_head.quant) return UnimplementedError("CUDA backend: a quantized LM head is not supported (FP16 only)");
  if (w.lm_head.weight.size() != static_cast<size_t>(m->V_ * m->d_)) return InvalidArgumentError("LM head has the wrong size");
  int64_t bytes = 0;
  auto upload_linear = [&](const mq::Linear& src, Linear* dst, const char* name, bool allow_transform) -> Status {
    dst->out = src.out_features, dst->in = src.in_features, dst->ld = Pad16(src.in_features);
    if (src.input_transform && !allow_transform)
      return UnimplementedError(std::string("CUDA backend: online transform on ") + name + " is not supported");
    if (src.quant.has_value() != int8)
      return UnimplementedError(std::string("CUDA backend: ") + name +
                                " must be quantized like in_proj (all four layer linears INT8, or none)");
    if (int8) {
      const LinearQuant& q = *src.quant;
      if (q.weight_bits != weight_bits)
        return UnimplementedError(std::string("CUDA backend: ") + name + " has " + std::to_string(q.weight_bits) +
                                  "-bit weights, its layer's in_proj " + std::to_string(weight_bits) +
                                  " (one width per layer)");
      if (weight_bits != 4 && weight_bits != 8)
        return InvalidArgumentError(std::string(name) + ": weight width must be 4 or 8 bits");
      if (q.qweight.size() != static_cast<size_t>(dst->out * dst->in))
        return InvalidArgumentError(std::string(name) + ": quantized weights do not match its shape");
      if (weight_bits == 4) {
        MQ_ASSIGN_OR_RETURN(std::vector<uint8_t> packed, PackInt4Rows(q.qweight.data(), dst->out, dst->in, dst->ld / 2));
        MQ_RETURN_IF_ERROR(Upload(&dst->w4, packed));
        int4_scratch = std::max(int4_scratch, dst->out * dst->ld);
      } else {
        MQ_RETURN_IF_ERROR(Upload(&dst->w8, PadInt8(q.qweight, dst->out, dst->in, dst->ld)));
      }
      MQ_RETURN_IF_ERROR(Upload(&dst->wscale, q.weight_scale));
      dst->act_static_scale = q.act_mode == ActScaleMode::kPerTensorStatic ? q.act_scale : 0.0f;
      if (q.act_mode == ActScaleMode::kPerTensorStatic && !(q.act_scale > 0.0f))
        return InvalidArgumentError(std::string(name) + ": static activation scale must be positive");
    } else {
      MQ_RETURN_IF_ERROR(Upload(&dst->w16, ToHalfPadded(src.weight, dst->out, dst->in, dst->ld)));
    }
    if (!src.bias.empty()) MQ_RETURN_IF_ERROR(Upload(&dst->bias, src.bias));
    bytes += dst->bytes();
    return OkStatus();
  };
  for (int64_t li = 0; li < m->layers_; ++li) {
    const MambaLayerWeights& s = w.layers[static_cast<size_t>(li)];
    Layer& L = m->layer_[static_cast<size_t>(li)];
    if (s.quantize_conv_input || s.quantize_output_product || !s.state_rotation.empty()) {
      if (!int8) return UnimplementedError("CUDA backend: scope `full` needs the INT8 linears of a quantized model");
      if (s.quantize_output_product && !s.state_scale_per_channel)
        return UnimplementedError("CUDA backend: scope `full` with one h scale per time step (state_granularity "
                                  "per_step) needs a grid-wide reduction every step; the GPU runs per_step_channel");
      if (!s.state_rotation.empty()) {
        if (static_cast<int64_t>(s.state_rotation.size()) != m->N_ * m->N_)
          return InvalidArgumentError("state rotation must be d_state × d_state");
        MQ_RETURN_IF_ERROR(Upload(&L.state_rot, s.state_rotation));
      }
      L.quant_conv_input = s.quantize_conv_input;
      L.quant_output_product = s.quantize_output_product;
      m->full_scope_ = true;
    }
    weight_bits = s.in_proj.quant ? s.in_proj.quant->weight_bits : 16;
    if (weight_bits == 4) m->int4_ = true;
    else if (int8) m->int8_layers_ = true;
    MQ_RETURN_IF_ERROR(upload_linear(s.in_proj, &L.in_proj, "in_proj", false));
    MQ_RETURN_IF_ERROR(upload_linear(s.x_proj, &L.x_proj, "x_proj", false));
    MQ_RETURN_IF_ERROR(upload_linear(s.dt_proj, &L.dt_proj, "dt_proj", false));
    MQ_RETURN_IF_ERROR(upload_linear(s.out_proj, &L.out_proj, "out_proj", true));
    MQ_RETURN_IF_ERROR(Upload(&L.norm, s.norm));
    MQ_RETURN_IF_ERROR(Upload(&L.conv_w, s.conv_weight));
    MQ_RETURN_IF_ERROR(Upload(&L.conv_b, s.conv_bias));
    std::vector<float> a2(s.A.size());
    for (size_t i = 0; i < a2.size(); ++i) a2[i] = step_math::ScanA2(s.A[i]);
    MQ_RETURN_IF_ERROR(Upload(&L.A2, a2));
    MQ_RETURN_IF_ERROR(Upload(&L.D, s.D));
    if (!s.gate_scale.empty()) MQ_RETURN_IF_ERROR(Upload(&L.gate_scale, s.gate_scale));
    if (s.out_proj.input_transform) {
      if (!int8) return UnimplementedError("CUDA backend: online rotation on a float out_proj is not supported");
      const auto* h = dynamic_cast<const quant::HadamardRowTransform*>(s.out_proj.input_transform.get());
      if (h == nullptr) return UnimplementedError("CUDA backend: only Hadamard online transforms are supported");
      if (h->hadamard().size() != m->E_) return InvalidArgumentError("online Hadamard size does not match d_inner");
      MQ_RETURN_IF_ERROR(UploadHadamard(&L, h->hadamard()));
    }
    bytes += static_cast<int64_t>(L.norm.bytes() + L.conv_w.bytes() + L.conv_b.bytes() + L.A2.bytes() + L.D.bytes() +
                                  L.gate_scale.bytes() + L.had_scale.bytes());
  }
  if (m->full_scope_) {
    MQ_ASSIGN_OR_RETURN(m->buf_->u0q, DeviceBuffer<float>::Allocate(static_cast<size_t>(m->options_.max_tokens * m->E_)));
  }
  if (int4_scratch > 0) {
    MQ_ASSIGN_OR_RETURN(m->int4_unpacked_, DeviceBuffer<int8_t>::Allocate(static_cast<size_t>(int4_scratch)));
  }
  MQ_RETURN_IF_ERROR(Upload(&m->embeddings_, w.embeddings));
  MQ_RETURN_IF_ERROR(Upload(&m->norm_f_, w.norm_f));
  MQ_RETURN_IF_ERROR(Upload(&m->lm_head_, ToHalfPadded(w.lm_head.weight, m->V_, m->d_, m->dp_)));
  bytes += static_cast<int64_t>(m->lm_head_.bytes() + m->norm_f_.bytes());
  m->decode_weight_bytes_ = bytes;
  MQ_RETURN_IF_ERROR(m->PrepareLayerKernels());
  MQ_RETURN_IF_ERROR(m->stream_.Synchronize());
  return std::move(m);
}

StatusOr<std::unique_ptr<CudaMambaModel>> CudaMambaModel::CreateRandom(const RandomModelSpec& spec,
                                                                       const CudaModelOptions& o) {
  if (spec.weight_bits != 8 && !(spec.int8 && spec.weight_bits == 4))
    return InvalidArgumentError("random model: weight_bits must be 8, or 4 with int8");
  std::unique_ptr<CudaMambaModel> m(new CudaMambaModel());
  MQ_RETURN_IF_ERROR(m->Init(spec.config, spec.int8, o));
  m->int4_ = spec.int8 && spec.weight_bits == 4;
  int64_t int4_scratch = 0;
  cudaStream_t st = m->stream_.get();
  uint64_t seed = spec.seed * 1000003ull;
  int64_t bytes = 0;
  auto f32 = [&](DeviceBuffer<float>* b, int64_t n, float lo, float hi) -> Status {
    MQ_ASSIGN_OR_RETURN(*b, DeviceBuffer<float>::Allocate(static_cast<size_t>(n)));
    return LaunchFillUniformF32(b->get(), n, lo, hi, ++seed, st);
  };
  auto linear = [&](Linear* L, int64_t out, int64_t in, bool bias) -> Status {
    L->out = out, L->in = in, L->ld = Pad16(in);
    const float a = std::sqrt(3.0f / static_cast<float>(in));
    if (m->int4_) {
      MQ_ASSIGN_OR_RETURN(L->w4, DeviceBuffer<uint8_t>::Allocate(static_cast<size_t>(out * L->ld / 2)));
      MQ_RETURN_IF_ERROR(LaunchFillRandomInt4(L->w4.get(), out, in, L->ld, ++seed, st));
      MQ_ASSIGN_OR_RETURN(L->wscale, DeviceBuffer<float>::Allocate(static_cast<size_t>(out)));
      MQ_RETURN_IF_ERROR(LaunchFillUniformF32(L->wscale.get(), out, 0.9f * a / 7.0f, 1.1f * a / 7.0f, ++seed, st));
      int4_scratch = std::max(int4_scratch, out * L->ld);
    } else if (m->int8_) {
      MQ_ASSIGN_OR_RETURN(L->w8, DeviceBuffer<int8_t>::Allocate(static_cast<size_t>(out * L->ld)));
      MQ_RETURN_IF_ERROR(LaunchFillUniformI8(L->w8.get(), out, in, L->ld, -127, 127, ++seed, st));
      MQ_ASSIGN_OR_RETURN(L->wscale, DeviceBuffer<float>::Allocate(static_cast<size_t>(out)));
      MQ_RETURN_IF_ERROR(LaunchFillUniformF32(L->wscale.get(), out, 0.9f * a / 127.0f, 1.1f * a / 127.0f, ++seed, st));
    } else {
      MQ_ASSIGN_OR_RETURN(L->w16, DeviceBuffer<__half>::Allocate(static_cast<size_t>(out * L->ld)));
      MQ_RETURN_IF_ERROR(LaunchFillUniformF16(L->w16.get(), out, in, L->ld, -a, a, ++seed, st));
    }
    if (bias) MQ_RETURN_IF_ERROR(f32(&L->bias, out, -4.6f, -2.3f));  // dt bias: softplus⁻¹ of 0.01…0.1
    bytes += L->bytes();
    return OkStatus();
  };
  const int64_t d = m->d_, E = m->E_, N = m->N_, R = m->R_, K = m->K_;
  for (Layer& L : m->layer_) {
    MQ_RETURN_IF_ERROR(f32(&L.norm, d, 0.9f, 1.1f));
    MQ_RETURN_IF_ERROR(linear(&L.in_proj, 2 * E, d, false));
    MQ_RETURN_IF_ERROR(f32(&L.conv_w, E * K, -0.5f, 0.5f));
    MQ_RETURN_IF_ERROR(f32(&L.conv_b, E, -0.1f, 0.1f));
    MQ_RETURN_IF_ERROR(linear(&L.x_proj, R + 2 * N, E, false));
    MQ_RETURN_IF_ERROR(linear(&L.dt_proj, E, R, true));
    MQ_RETURN_IF_ERROR(f32(&L.A2, E * N, -16.0f * step_math::kLog2e, -1.0f * step_math::kLog2e));
    MQ_RETURN_IF_ERROR(f32(&L.D, E, 0.9f, 1.1f));
    MQ_RETURN_IF_ERROR(linear(&L.out_proj, d, E, false));
    if (m->int8_ && spec.online_hadamard) {
      MQ_ASSIGN_OR_RETURN(quant::RandomHadamard had, quant::RandomHadamard::Create(E, seed));
      MQ_RETURN_IF_ERROR(UploadHadamard(&L, had));
    }
    bytes += static_cast<int64_t>(L.norm.bytes() + L.conv_w.bytes() + L.conv_b.bytes() + L.A2.bytes() + L.D.bytes() +
                                  L.had_scale.bytes());
  }
  if (int4_scratch > 0) {
    MQ_ASSIGN_OR_RETURN(m->int4_unpacked_, DeviceBuffer<int8_t>::Allocate(static_cast<size_t>(int4_scratch)));
  }
  MQ_RETURN_IF_ERROR(f32(&m->embeddings_, m->V_ * d, -1.0f, 1.0f));
  MQ_RETURN_IF_ERROR(f32(&m->norm_f_, d, 0.9f, 1.1f));
  MQ_ASSIGN_OR_RETURN(m->lm_head_, DeviceBuffer<__half>::Allocate(static_cast<size_t>(m->V_ * m->dp_)));
  const float a = std::sqrt(3.0f / static_cast<float>(d));
  MQ_RETURN_IF_ERROR(LaunchFillUniformF16(m->lm_head_.get(), m->V_, d, m->dp_, -a, a, ++seed, st));
  bytes += static_cast<int64_t>(m->lm_head_.bytes() + m->norm_f_.bytes());
  m->decode_weight_bytes_ = bytes;
  MQ_RETURN_IF_ERROR(m->PrepareLayerKernels());
  MQ_RETURN_IF_ERROR(m->stream_.Synchronize());
  return std::move(m);
}

Status CudaMambaModel::RunLinear(const Linear& lin, const void* x, int64_t ldx, int64_t tokens, void* out, int64_t ldc,
                                 bool out_f32) {
  const bool w4 = !lin.w4.empty();
  if (w4 && tokens <= options_.int4_gemv_max_tokens) {
    Int4GemvParams p;
    p.w = lin.w4.get(), p.x = static_cast<const int8_t*>(x), p.ldx = ldx;
    p.acc = static_cast<int32_t*>(out), p.ldc = ldc, p.out = lin.out, p.tokens = tokens, p.k = lin.ld;
    return LaunchInt4Gemv(p, stream_.get());
  }
  if (int8_ && !w4 && tokens <= options_.gemv_max_tokens) {
    Int8GemvParams p;
    p.w = lin.w8.get(), p.ldw = lin.ld, p.x = static_cast<const int8_t*>(x), p.ldx = ldx;
    p.acc = static_cast<int32_t*>(out), p.ldc = ldc, p.out = lin.out, p.tokens = tokens, p.k = lin.ld;
    return LaunchInt8Gemv(p, stream_.get());
  }
  const int64_t skinny_max = w4 ? options_.int4_skinny_gemm_max_tokens : options_.skinny_gemm_max_tokens;
  if (int8_ && tokens <= skinny_max && SkinnyGemmSupports(lin.out, lin.ld, tokens)) {
    SkinnyGemmParams p;
    if (w4) {
      p.w4 = lin.w4.get();
    } else {
      p.w8 = lin.w8.get();
    }
    p.ldw = lin.ld, p.x = static_cast<const int8_t*>(x), p.ldx = ldx;
    p.acc = static_cast<int32_t*>(out), p.ldc = ldc, p.out = lin.out, p.tokens = tokens, p.k = lin.ld;
    p.pdl = true;  // the kernel waits for the previous one before it reads x or writes acc
    return LaunchSkinnyGemm(p, stream_.get());
  }
  if (w4) {
    // Many tokens: unpack once per call into the scratch buffer (stream-ordered, so one buffer
    // serves every linear) for cuBLASLt.
    if (int4_unpacked_.size() < static_cast<size_t>(lin.out * lin.ld))
      return InternalError("W4A8: unpack scratch smaller than a linear");
    MQ_RETURN_IF_ERROR(LaunchUnpackInt4(lin.w4.get(), lin.out, lin.ld, int4_unpacked_.get(), stream_.get()));
    return gemm_->Int8(int4_unpacked_.get(), lin.ld, static_cast<const int8_t*>(x), ldx, static_cast<int32_t*>(out), ldc,
                       lin.out, tokens, lin.ld, stream_.get());
  }
  if (int8_) {
    return gemm_->Int8(lin.w8.get(), lin.ld, static_cast<const int8_t*>(x), ldx, static_cast<int32_t*>(out), ldc,
                       lin.out, tokens, lin.ld, stream_.get());
  }
  return gemm_->F16(lin.w16.get(), lin.ld, static_cast<const __half*>(x), ldx, out, out_f32, ldc, lin.out, tokens,
                    lin.ld, stream_.get());
}

Status CudaMambaModel::EnqueueForward(const int32_t* ids_dev, const int32_t* slots_dev, int64_t B, int64_t L,
                                      LogitsMode mode) {
  const int64_t T = B * L;
  if (B < 1 || L < 1) return InvalidArgumentError("forward: batch and length must be positive");
  if (T > options_.max_tokens || B > options_.max_batch)
    return InvalidArgumentError("forward: " + std::to_string(B) + "×" + std::to_string(L) +
                                " exceeds the model's max_tokens/max_batch");
  const int64_t logit_rows = mode == LogitsMode::kAll ? T : B;
  if (mode != LogitsMode::kNone && logit_rows > options_.max_logit_rows)
    return InvalidArgumentError("forward: " + std::to_string(logit_rows) + " logits rows exceed max_logit_rows");
  cudaStream_t st = stream_.get();
  Buffers& b = *buf_;
  const int64_t dbc_ld = R_ + 2 * N_;

  EmbeddingParams ep;
  ep.ids = ids_dev, ep.table = embeddings_.get(), ep.h = b.h.get(), ep.tokens = T, ep.d = d_;
  MQ_RETURN_IF_ERROR(Mark("start"));
  MQ_RETURN_IF_ERROR(LaunchEmbedding(ep, st));
  MQ_RETURN_IF_ERROR(Mark("embedding"));

  ActView prev_out;  // out_proj output of the previous layer (kNone before layer 0)
  for (int64_t li = 0; li < layers_; ++li) {
    Layer& Ly = layer_[static_cast<size_t>(li)];
    // 1. residual add + RMSNorm (+ INT8)
    ResidualNormParams rn;
    rn.h = b.h.get(), rn.residual = prev_out, rn.gamma = Ly.norm.get();
    rn.eps = static_cast<float>(config_.layer_norm_epsilon), rn.rows = T, rn.d = d_;
    if (int8_) {
      rn.quant = QuantOut{b.xn8.get(), dp_, b.s_xn.get(), Ly.in_proj.act_static_scale};
    } else {
      rn.out_f16 = b.xn16.get(), rn.ld_out = dp_;
    }
    MQ_RETURN_IF_ERROR(LaunchResidualNorm(rn, st));
    MQ_RETURN_IF_ERROR(Mark("residual+norm"));
    MQ_RETURN_IF_ERROR(Tap(li, ActivationSite::kInProjInput, b.xn16.get(), false, dp_, T, d_));
    // 2. in_proj → xz [T, 2E]
    if (int8_) {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.in_proj, b.xn8.get(), dp_, T, b.xz_acc.get(), 2 * E_, false));
    } else {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.in_proj, b.xn16.get(), dp_, T, b.xz16.get(), 2 * E_, false));
    }
    MQ_RETURN_IF_ERROR(Mark("in_proj"));
    ActView xz_u0, xz_z;
    if (int8_) {
      xz_u0 = ActView{ActKind::kInt32Acc, b.xz_acc.get(), 2 * E_, b.s_xn.get(), Ly.in_proj.wscale.get(),
                      Ly.in_proj.bias.get()};
      xz_z = ActView{ActKind::kInt32Acc, b.xz_acc.get() + E_, 2 * E_, b.s_xn.get(), Ly.in_proj.wscale.get() + E_,
                     Ly.in_proj.bias.empty() ? nullptr : Ly.in_proj.bias.get() + E_};
    } else {
      xz_u0 = ActView{ActKind::kF16, b.xz16.get(), 2 * E_, nullptr, nullptr, Ly.in_proj.bias.get()};
      xz_z = ActView{ActKind::kF16, b.xz16.get() + E_, 2 * E_, nullptr, nullptr,
                     Ly.in_proj.bias.empty() ? nullptr : Ly.in_proj.bias.get() + E_};
    }
    // 3. conv + SiLU (+ INT8)
    CausalConvParams cp;
    cp.u0 = xz_u0, cp.weight = Ly.conv_w.get(), cp.bias = Ly.conv_b.get();
    cp.conv_state = ConvStateLayer(li), cp.slot_stride = layers_ * E_ * (K_ - 1);
    cp.state_dtype = options_.state_dtype, cp.scale_slot_stride = layers_ * E_;
    cp.conv_scale = conv_scale_.empty() ? nullptr : conv_scale_.get() + li * E_;
    cp.slot_ids = slots_dev, cp.batch = B, cp.seqlen = L, cp.E = E_, cp.K = K_;
    if (Ly.quant_conv_input) {
      FakeQuantRowsParams fq;
      fq.x = xz_u0, fq.rows = T, fq.cols = E_, fq.out = b.u0q.get();
      MQ_RETURN_IF_ERROR(LaunchFakeQuantRows(fq, st));
      cp.u0 = ActView{ActKind::kF32, b.u0q.get(), E_, nullptr, nullptr, nullptr};
    }
    if (int8_) {
      cp.out_f32 = b.u32.get();
      cp.quant = QuantOut{b.u8.get(), Ep_, b.s_u.get(), Ly.x_proj.act_static_scale};
    } else {
      cp.out_f16 = b.u16.get();
    }
    // A decode step's conv and scan kernels prefetch out_proj's and the next layer's weights into L2
    // (SetDecodeL2Ahead; empty spans when off or above the token limit).
    const bool ahead = L == 1 && T <= options_.decode_l2_ahead_max_tokens && li < static_cast<int64_t>(dec_layer_.size());
    if (ahead) cp.l2_ahead = dec_layer_[static_cast<size_t>(li)].ahead_x;
    MQ_RETURN_IF_ERROR(LaunchCausalConv(cp, st));
    MQ_RETURN_IF_ERROR(Mark("conv"));
    MQ_RETURN_IF_ERROR(Tap(li, ActivationSite::kXProjInput, b.u16.get(), false, E_, T, E_));
    // 4. x_proj → δ|B|C
    if (int8_) {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.x_proj, b.u8.get(), Ep_, T, b.xp_acc.get(), dbc_ld, false));
    } else {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.x_proj, b.u16.get(), E_, T, b.xp16.get(), dbc_ld, false));
    }
    MQ_RETURN_IF_ERROR(Mark("x_proj"));
    XProjPostParams xp;
    xp.tokens = T, xp.R = R_, xp.N = N_, xp.dbc = b.dbc.get();
    if (int8_) {
      xp.in = ActView{ActKind::kInt32Acc, b.xp_acc.get(), dbc_ld, b.s_u.get(), Ly.x_proj.wscale.get(), Ly.x_proj.bias.get()};
      xp.quant = QuantOut{b.dl8.get(), Rp_, b.s_dl.get(), Ly.dt_proj.act_static_scale};
    } else {
      xp.in = ActView{ActKind::kF16, b.xp16.get(), dbc_ld, nullptr, nullptr, Ly.x_proj.bias.get()};
      xp.delta_f16 = b.dl16.get(), xp.ld_delta = Rp_;
    }
    MQ_RETURN_IF_ERROR(LaunchXProjPost(xp, st));
    MQ_RETURN_IF_ERROR(Mark("x_proj_post"));
    MQ_RETURN_IF_ERROR(Tap(li, ActivationSite::kDtProjInput, b.dl16.get(), false, Rp_, T, R_));
    MQ_RETURN_IF_ERROR(Tap(li, ActivationSite::kSsmC, b.dbc.get() + R_ + N_, true, dbc_ld, T, N_));
    // 5. dt_proj → Δ before bias/softplus
    if (int8_) {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.dt_proj, b.dl8.get(), Rp_, T, b.delta_acc.get(), E_, false));
    } else {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.dt_proj, b.dl16.get(), Rp_, T, b.delta16.get(), E_, false));
    }
    MQ_RETURN_IF_ERROR(Mark("dt_proj"));
    // 6. scan + gate
    SelectiveScanParams sp;
    sp.batch = B, sp.seqlen = L, sp.E = E_, sp.N = N_;
    if (int8_) {
      sp.delta = ActView{ActKind::kInt32Acc, b.delta_acc.get(), E_, b.s_dl.get(), Ly.dt_proj.wscale.get(),
                         Ly.dt_proj.bias.get()};
      sp.u = b.u32.get(), sp.u_f32 = true, sp.y_f32 = b.y32.get();
    } else {
      sp.delta = ActView{ActKind::kF16, b.delta16.get(), E_, nullptr, nullptr, Ly.dt_proj.bias.get()};
      sp.u = b.u16.get(), sp.u_f32 = false, sp.y_f16 = b.y16.get();
    }
    sp.z = xz_z, sp.dbc = b.dbc.get(), sp.dbc_ld = dbc_ld, sp.R = R_;
    sp.A2 = Ly.A2.get(), sp.D = Ly.D.get(), sp.gate_scale = Ly.gate_scale.get();
    sp.ssm_state = SsmStateLayer(li), sp.slot_stride = layers_ * E_ * N_, sp.slot_ids = slots_dev;
    sp.state_dtype = options_.state_dtype, sp.scale_slot_stride = layers_ * E_;
    sp.ssm_scale = ssm_scale_.empty() ? nullptr : ssm_scale_.get() + li * E_;
    sp.state_rotation = Ly.state_rot.get(), sp.quantize_output_product = Ly.quant_output_product;
    sp.state_absmax = state_absmax_.empty() ? nullptr : state_absmax_.get() + li * N_;
    if (ahead) sp.l2_ahead = dec_layer_[static_cast<size_t>(li)].ahead_scan;
    MQ_RETURN_IF_ERROR(LaunchSelectiveScan(sp, st));
    MQ_RETURN_IF_ERROR(Mark("scan"));
    MQ_RETURN_IF_ERROR(Tap(li, ActivationSite::kOutProjInput, b.y16.get(), false, E_, T, E_));
    // 7. [R2 Hadamard] + INT8, out_proj
    if (int8_) {
      HadamardQuantParams hp;
      hp.x = b.y32.get(), hp.tokens = T, hp.n = E_;
      hp.m = Ly.had_m, hp.p = Ly.had_p, hp.scale = Ly.had_scale.get(), hp.mix = Ly.had_mix.get();
      hp.quant = QuantOut{b.y8.get(), Ep_, b.s_y.get(), Ly.out_proj.act_static_scale};
      MQ_RETURN_IF_ERROR(LaunchHadamardQuant(hp, st));
      MQ_RETURN_IF_ERROR(Mark("hadamard+quant"));
      MQ_RETURN_IF_ERROR(RunLinear(Ly.out_proj, b.y8.get(), Ep_, T, b.o_acc.get(), d_, false));
      prev_out = ActView{ActKind::kInt32Acc, b.o_acc.get(), d_, b.s_y.get(), Ly.out_proj.wscale.get(),
                         Ly.out_proj.bias.get()};
      MQ_RETURN_IF_ERROR(Mark("out_proj"));
    } else {
      MQ_RETURN_IF_ERROR(RunLinear(Ly.out_proj, b.y16.get(), E_, T, b.o32.get(), d_, true));
      prev_out = ActView{ActKind::kF32, b.o32.get(), d_, nullptr, nullptr, Ly.out_proj.bias.get()};
      MQ_RETURN_IF_ERROR(Mark("out_proj"));
    }
  }
  if (mode == LogitsMode::kNone) return OkStatus();
  // Final residual add + norm_f on the rows whose logits are wanted, then the FP16 LM head.
  ResidualNormParams rn;
  rn.h = b.h.get(), rn.residual = prev_out, rn.gamma = norm_f_.get();
  rn.eps = static_cast<float>(config_.layer_norm_epsilon), rn.rows = logit_rows, rn.d = d_;
  if (mode == LogitsMode::kLast) rn.row_stride = L, rn.row_offset = L - 1;
  rn.out_f16 = b.hn16.get(), rn.ld_out = dp_;
  MQ_RETURN_IF_ERROR(LaunchResidualNorm(rn, st));
  MQ_RETURN_IF_ERROR(Mark("final_norm"));
  MQ_RETURN_IF_ERROR(gemm_->F16(lm_head_.get(), dp_, b.hn16.get(), dp_, logits_.get(), true, V_, V_, logit_rows, dp_, st));
  return Mark("lm_head");
}

Status CudaMambaModel::SetActivationTap(ActivationTap tap) {
  if (tap && int8_) return FailedPreconditionError("activation taps observe FP16 models only (calibration runs in float)");
  tap_ = std::move(tap);
  return OkStatus();
}

Status CudaMambaModel::Tap(int64_t layer, ActivationSite site, const void* x, bool f32, int64_t ld, int64_t rows,
                           int64_t cols) {
  if (!tap_ || int8_) return OkStatus();
  ActivationTapView v{layer, site, nullptr, nullptr, ld, rows, cols, stream_.get()};
  if (f32) {
    v.xf = static_cast<const float*>(x);
  } else {
    v.x = static_cast<const __half*>(x);
  }
  return tap_(v);
}

Status CudaMambaModel::ObserveStateAbsMax(bool on) {
  if (!on) {
    state_absmax_ = DeviceBuffer<float>();
    return OkStatus();
  }
  if (int8_) return FailedPreconditionError("state statistics are taken on FP16 models only (calibration runs in float)");
  MQ_ASSIGN_OR_RETURN(state_absmax_, DeviceBuffer<float>::Allocate(static_cast<size_t>(layers_ * N_)));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(state_absmax_.get(), 0, state_absmax_.bytes(), stream_.get()));
  return OkStatus();
}

StatusOr<std::vector<float>> CudaMambaModel::StateAbsMax() const {
  if (state_absmax_.empty()) return FailedPreconditionError("state observation is off");
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
  return state_absmax_.ToHost();
}

Status CudaMambaModel::Mark(const char* stage) {
  if (!timing_) return OkStatus();
  if (stage_names_.size() == events_.size()) {
    MQ_ASSIGN_OR_RETURN(CudaEvent e, CudaEvent::Create());
    events_.push_back(std::move(e));
  }
  MQ_RETURN_IF_ERROR(events_[stage_names_.size()].Record(stream_.get()));
  stage_names_.push_back(stage);
  return OkStatus();
}

Status CudaMambaModel::CollectStageTimes() {
  MQ_RETURN_IF_ERROR(stream_.Synchronize());
  for (size_t i = 1; i < stage_names_.size(); ++i) {
    MQ_ASSIGN_OR_RETURN(float ms, ElapsedMs(events_[i - 1], events_[i]));
    auto it = std::find_if(stage_ms_.begin(), stage_ms_.end(), [&](const auto& p) { return p.first == stage_names_[i]; });
    if (it == stage_ms_.end()) stage_ms_.emplace_back(stage_names_[i], ms);
    else it->second += ms;
  }
  stage_names_.clear();
  return OkStatus();
}

void* CudaMambaModel::ConvStateLayer(int64_t li) const {
  const int64_t off = li * E_ * (K_ - 1);
  if (options_.state_dtype == StateDtype::kF32) return conv_state_.get() + off;
  return conv_state_q_.get() + off * state::DtypeBytes(options_.state_dtype);
}

void* CudaMambaModel::SsmStateLayer(int64_t li) const {
  const int64_t off = li * E_ * N_;
  if (options_.state_dtype == StateDtype::kF32) return ssm_state_.get() + off;
  return ssm_state_q_.get() + off * state::DtypeBytes(options_.state_dtype);
}

// One slot's state is contiguous in every pool: [slots + 1][layers][E][K−1], [..][E][N] and, for
// int8, the scales [slots + 1][layers][E]. The regions of slot s, as (pool, bytes per slot).
namespace {
struct SlotRegion {
  void* pool;
  int64_t bytes;
};
}  // namespace

Status CudaMambaModel::ResetSlots(const std::vector<int32_t>& slots) {
  const int64_t eb = state::DtypeBytes(options_.state_dtype);
  const SlotRegion regions[] = {{ConvStateLayer(0), layers_ * E_ * (K_ - 1) * eb}, {SsmStateLayer(0), layers_ * E_ * N_ * eb},
                                {conv_scale_.get(), conv_scale_.empty() ? 0 : layers_ * E_ * 4},
                                {ssm_scale_.get(), ssm_scale_.empty() ? 0 : layers_ * E_ * 4}};
  for (int32_t s : slots) {
    if (s < 0 || s > options_.num_slots) return InvalidArgumentError("state slot out of range");
    for (const SlotRegion& r : regions)
      if (r.bytes > 0)
        MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(static_cast<char*>(r.pool) + s * r.bytes, 0, r.bytes, stream_.get()));
  }
  return OkStatus();
}

Status CudaMambaModel::CopySlot(int32_t src, int32_t dst) {
  if (src < 0 || src > options_.num_slots || dst < 0 || dst > options_.num_slots)
    return InvalidArgumentError("state slot out of range");
  if (src == dst) return OkStatus();
  const int64_t eb = state::DtypeBytes(options_.state_dtype);
  const SlotRegion regions[] = {{ConvStateLayer(0), layers_ * E_ * (K_ - 1) * eb}, {SsmStateLayer(0), layers_ * E_ * N_ * eb},
                                {conv_scale_.get(), conv_scale_.empty() ? 0 : layers_ * E_ * 4},
                                {ssm_scale_.get(), ssm_scale_.empty() ? 0 : layers_ * E_ * 4}};
  for (const SlotRegion& r : regions) {
    if (r.bytes == 0) continue;
    char* pool = static_cast<char*>(r.pool);
    MQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(pool + dst * r.bytes, pool + src * r.bytes, r.bytes, cudaMemcpyDeviceToDevice, stream_.get()));
  }
  return OkStatus();
}

StatusOr<SlotStateHost> CudaMambaModel::ReadSlotState(int32_t slot) const {
  if (slot < 0 || slot > options_.num_slots) return InvalidArgumentError("state slot out of range");
  const int64_t eb = state::DtypeBytes(options_.state_dtype);
  SlotStateHost h;
  h.dtype = options_.state_dtype;
  h.conv.resize(static_cast<size_t>(layers_ * E_ * (K_ - 1) * eb));
  h.ssm.resize(static_cast<size_t>(layers_ * E_ * N_ * eb));
  MQ_RETURN_IF_ERROR(stream_.Synchronize());
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(h.conv.data(), static_cast<const char*>(ConvStateLayer(0)) + slot * h.conv.size(),
                                     h.conv.size(), cudaMemcpyDeviceToHost));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(h.ssm.data(), static_cast<const char*>(SsmStateLayer(0)) + slot * h.ssm.size(),
                                     h.ssm.size(), cudaMemcpyDeviceToHost));
  if (state::HasScale(h.dtype)) {
    h.conv_scale.resize(static_cast<size_t>(layers_ * E_));
    h.ssm_scale.resize(static_cast<size_t>(layers_ * E_));
    const size_t n = h.conv_scale.size();
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(h.conv_scale.data(), conv_scale_.get() + slot * n, n * 4, cudaMemcpyDeviceToHost));
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(h.ssm_scale.data(), ssm_scale_.get() + slot * n, n * 4, cudaMemcpyDeviceToHost));
  }
  return h;
}

Status CudaMambaModel::Forward(const std::vector<int32_t>& ids, const std::vector<int32_t>& slots, int64_t B, int64_t L,
                               LogitsMode mode, std::vector<float>* logits) {
  if (static_cast<int64_t>(ids.size()) != B * L || static_cast<int64_t>(slots.size()) != B)
    return InvalidArgumentError("forward: ids must hold B·L tokens and slots B entries");
  if (B * L > options_.max_tokens || B > options_.max_batch) return InvalidArgumentError("forward: too many tokens");
  for (int32_t id : ids)
    if (id < 0 || id >= V_) return InvalidArgumentError("token id " + std::to_string(id) + " outside the vocabulary");
  for (int32_t s : slots)
    if (s < 0 || s > options_.num_slots) return InvalidArgumentError("state slot out of range");
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(ids_.get(), ids.data(), ids.size() * 4, cudaMemcpyHostToDevice, stream_.get()));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(slots_.get(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice, stream_.get()));
  MQ_RETURN_IF_ERROR(EnqueueForward(ids_.get(), slots_.get(), B, L, mode));
  if (logits != nullptr && mode != LogitsMode::kNone) {
    const int64_t rows = mode == LogitsMode::kAll ? B * L : B;
    logits->resize(static_cast<size_t>(rows * V_));
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(logits->data(), logits_.get(), logits->size() * 4, cudaMemcpyDeviceToHost,
                                            stream_.get()));
  }
  return stream_.Synchronize();
}

Status CudaMambaModel::ResetDecodeCounters() {
  MQ_RETURN_IF_ERROR(step_.Zero(stream_.get()));
  MQ_RETURN_IF_ERROR(finished_.Zero(stream_.get()));
  return OkStatus();
}

Status CudaMambaModel::PrepareLayerKernels() {
  const size_t Bm = kDecodeMaxBatch;
  MQ_ASSIGN_OR_RETURN(dec_xz_, DeviceBuffer<float>::Allocate(Bm * 2 * E_));
  MQ_ASSIGN_OR_RETURN(dec_u_, DeviceBuffer<float>::Allocate(Bm * E_));
  MQ_ASSIGN_OR_RETURN(dec_umax_, DeviceBuffer<unsigned int>::Allocate(Bm));
  MQ_RETURN_IF_ERROR(dec_umax_.Zero(stream_.get()));  // kernel 3 re-zeroes it after every layer
  MQ_ASSIGN_OR_RETURN(dec_dbc_, DeviceBuffer<float>::Allocate(Bm * (R_ + 2 * N_)));
  MQ_ASSIGN_OR_RETURN(dec_y_, DeviceBuffer<float>::Allocate(Bm * E_));
  MQ_ASSIGN_OR_RETURN(dec_yq_, DeviceBuffer<int8_t>::Allocate(Bm * Ep_));
  MQ_ASSIGN_OR_RETURN(dec_ys_, DeviceBuffer<float>::Allocate(Bm));
  auto linear = [&](const Linear& l) {
    DecodeLinear d;
    d.w = !l.w4.empty() ? static_cast<const void*>(l.w4.get())
          : int8_       ? static_cast<const void*>(l.w8.get())
                        : static_cast<const void*>(l.w16.get());
    d.ld = l.ld, d.out = l.out, d.in = l.in;
    d.wscale = l.wscale.get(), d.bias = l.bias.get(), d.act_static_scale = l.act_static_scale;
    return d;
  };
  dec_layer_.assign(static_cast<size_t>(layers_), DecodeLayerParams{});
  for (int64_t li = 0; li < layers_; ++li) {
    const Layer& L = layer_[static_cast<size_t>(li)];
    DecodeLayerParams& p = dec_layer_[static_cast<size_t>(li)];
    p.int8 = int8_, p.int4 = !L.in_proj.w4.empty();  // per layer: a w4a8 model may keep layers at 8 bits
    p.d = d_, p.E = E_, p.N = N_, p.R = R_, p.K = K_;
    p.eps = static_cast<float>(config_.layer_norm_epsilon);
    p.slots = dec_slots_.get();
    p.h = buf_->h.get(), p.xz = dec_xz_.get(), p.u = dec_u_.get(), p.umax = dec_umax_.get();
    p.dbc = dec_dbc_.get(), p.y = dec_y_.get(), p.yq = dec_yq_.get(), p.ys = dec_ys_.get();
    p.norm = L.norm.get();
    p.in_proj = linear(L.in_proj), p.x_proj = linear(L.x_proj), p.dt_proj = linear(L.dt_proj);
    p.out_proj = linear(L.out_proj);
    p.conv_w = L.conv_w.get(), p.conv_b = L.conv_b.get();
    p.conv_state = conv_state_.get() + li * E_ * (K_ - 1), p.conv_slot_stride = layers_ * E_ * (K_ - 1);
    p.A2 = L.A2.get(), p.D = L.D.get(), p.gate_scale = L.gate_scale.get();
    p.ssm_state = ssm_state_.get() + li * E_ * N_, p.ssm_slot_stride = layers_ * E_ * N_;
    p.had_scale = L.had_scale.get(), p.had_neg = L.had_neg.get(), p.had_m = L.had_m, p.had_p = L.had_p;
    p.had_mix = L.had_mix.empty() ? nullptr : L.had_mix.get();
  }
  dec_head_ = DecodeLmHeadParams{};
  dec_head_.d = d_, dec_head_.eps = static_cast<float>(config_.layer_norm_epsilon);
  dec_head_.h = buf_->h.get(), dec_head_.norm_f = norm_f_.get();
  dec_head_.head.w = lm_head_.get(), dec_head_.head.ld = dp_, dec_head_.head.out = V_, dec_head_.head.in = d_;
  dec_head_.logits = logits_.get(), dec_head_.ld_logits = V_;
  SetDecodeL2Ahead();
  return PreparePersistent();
}

namespace {
constexpr int64_t kDefaultDecodeL2AheadMb = 0;

int64_t DecodeL2AheadMb(int64_t option) {
  if (option >= 0) return option;
  static const int64_t env = [] {
    const char* e = std::getenv("MQ_DECODE_L2_AHEAD_MB");
    if (e == nullptr || *e == '\0') return kDefaultDecodeL2AheadMb;
    char* end = nullptr;
    const long long v = std::strtoll(e, &end, 10);
    return *end == '\0' && v >= 0 && v <= 1024 ? static_cast<int64_t>(v) : kDefaultDecodeL2AheadMb;
  }();
  return env;
}

// Bytes of a decode linear's weights as its kernels stream them.
int64_t DecodeWeightBytes(const DecodeLinear& l, bool int8, bool int4) { return DecodeRowBytes(l.ld, int8, int4) * l.out; }
}  // namespace

// Each layer's x_proj kernel prefetches its out_proj weights and its scan kernel a prefix of the
// next linear's (the next layer's in_proj, after the last layer the LM head), up to the budget
// together: at batch 1 these kernels are latency-bound and leave DRAM idle (docs/gpu.md, "L2
// look-ahead"). The per-stage decode path takes the same spans for its conv and scan step kernels.
void CudaMambaModel::SetDecodeL2Ahead() {
  const int64_t budget = DecodeL2AheadMb(options_.decode_l2_ahead_mb) << 20;
  for (size_t li = 0; li < dec_layer_.size(); ++li) {
    DecodeLayerParams& p = dec_layer_[li];
    const L2Span out{p.out_proj.w, DecodeWeightBytes(p.out_proj, p.int8, p.int4)};
    L2Span next{dec_head_.head.w, DecodeWeightBytes(dec_head_.head, false, false)};
    if (li + 1 < dec_layer_.size()) {
      const DecodeLayerParams& q = dec_layer_[li + 1];
      next = L2Span{q.in_proj.w, DecodeWeightBytes(q.in_proj, q.int8, q.int4)};
    }
    const hd::L2AheadSpans spans = hd::PlanL2Ahead(out, next, budget);
    p.ahead_x = spans.x, p.ahead_scan = spans.scan;
  }
}

// The persistent kernel's layer table is the layer kernels' per-layer parameters (one source for
// the weight, scale and state pointers), packed for the device.
Status CudaMambaModel::PreparePersistent() {
  dec_persist_ = DecodePersistentParams{};  // layers = 0: unavailable
  if (options_.state_dtype != StateDtype::kF32 || dec_layer_.empty()) return OkStatus();
  // One weight format for all layers (the kernel is instantiated per format): mixed 4/8-bit
  // models decode through the layer kernels.
  if (mixed_width()) return OkStatus();
  const DecodeLayerParams& p0 = dec_layer_[0];
  std::vector<PersistentLayer> table(static_cast<size_t>(layers_));
  bool hadamard = false;
  for (int64_t li = 0; li < layers_; ++li) {
    const DecodeLayerParams& p = dec_layer_[static_cast<size_t>(li)];
    // One padded row length per linear for all layers, and an R2 the decode Hadamard supports
    // (LaunchDecodeLayer's check): else the persistent path stays off.
    if (p.in_proj.ld != p0.in_proj.ld || p.x_proj.ld != p0.x_proj.ld || p.dt_proj.ld != p0.dt_proj.ld ||
        p.out_proj.ld != p0.out_proj.ld ||
        !hd::PersistShapeSupported(d_, E_, N_, K_, p.in_proj.ld, p.x_proj.ld, p.dt_proj.ld, p.out_proj.ld))
      return OkStatus();
    if (p.had_scale != nullptr && (p.had_m > 28 || p.had_m * p.had_p != E_ || (p.had_p & (p.had_p - 1)) != 0))
      return OkStatus();
    PersistentLayer& t = table[static_cast<size_t>(li)];
    t.in_proj = p.in_proj, t.x_proj = p.x_proj, t.dt_proj = p.dt_proj, t.out_proj = p.out_proj;
    t.norm = p.norm, t.conv_w = p.conv_w, t.conv_b = p.conv_b, t.A2 = p.A2, t.D = p.D, t.gate_scale = p.gate_scale;
    t.conv_state = p.conv_state, t.ssm_state = p.ssm_state;
    t.had_scale = p.had_scale, t.had_neg = p.had_neg, t.had_m = p.had_m, t.had_p = p.had_p;
    hadamard = hadamard || p.had_scale != nullptr;
  }
  MQ_ASSIGN_OR_RETURN(dec_persist_layers_, DeviceBuffer<uint8_t>::FromHost(reinterpret_cast<const uint8_t*>(table.data()),
                                                                           table.size() * sizeof(PersistentLayer)));
  MQ_ASSIGN_OR_RETURN(dec_xacc_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(kPersistentMaxBatch * (R_ + 2 * N_))));
  MQ_RETURN_IF_ERROR(dec_xacc_.Zero(stream_.get()));
  MQ_ASSIGN_OR_RETURN(dec_barrier_, DeviceBuffer<unsigned long long>::Allocate(1));
  MQ_RETURN_IF_ERROR(dec_barrier_.Zero(stream_.get()));
  DecodePersistentParams& q = dec_persist_;
  q.int8 = int8_, q.int4 = int4_;
  q.d = d_, q.E = E_, q.N = N_, q.R = R_, q.K = K_;
  q.eps = static_cast<float>(config_.layer_norm_epsilon);
  q.layer = reinterpret_cast<const PersistentLayer*>(dec_persist_layers_.get());
  q.ld_in = p0.in_proj.ld, q.ld_x = p0.x_proj.ld, q.ld_dt = p0.dt_proj.ld, q.ld_out = p0.out_proj.ld;
  q.hadamard = hadamard;
  q.slots = dec_slots_.get();
  q.conv_slot_stride = p0.conv_slot_stride, q.ssm_slot_stride = p0.ssm_slot_stride;
  q.h = buf_->h.get(), q.u = dec_u_.get(), q.y = dec_y_.get(), q.umax = dec_umax_.get();
  q.xacc = dec_xacc_.get(), q.barrier = dec_barrier_.get();
  q.layers = layers_;  // last: marks the path available
  return OkStatus();
}

bool CudaMambaModel::UsePersistent(int64_t B) const {
  return options_.decode_path == DecodePath::kPersistent && options_.state_dtype == StateDtype::kF32 && !full_scope_ &&
         dec_persist_.layers > 0 && B <= kPersistentMaxBatch && B <= options_.max_logit_rows;
}

Status CudaMambaModel::SetPersistentGrid(int grid) {
  if (grid < 0) return InvalidArgumentError("persistent decode: grid must be ≥ 0");
  dec_persist_.grid = grid;
  graphs_.clear();
  if (!dec_barrier_.empty()) MQ_RETURN_IF_ERROR(dec_barrier_.Zero(stream_.get()));
  return OkStatus();
}

bool CudaMambaModel::UseLayerKernels(int64_t B) const {
  // Scope `full` decodes through the per-stage kernels (its conv input scale spans the whole row).
  // W4A8's layer kernels read the packed weights (decode_kernels.cu, kW4).
  // A narrower state cache is read and written by the per-stage kernels only.
  return options_.decode_path == DecodePath::kLayerKernels && options_.state_dtype == StateDtype::kF32 &&
         !full_scope_ && !dec_layer_.empty() &&
         B <= kDecodeMaxBatch && B <= LayerKernelsMaxBatch() && B <= options_.max_logit_rows;
}

int64_t CudaMambaModel::LayerKernelsMaxBatch() const {
  if (options_.layer_kernels_max_batch > 0) return options_.layer_kernels_max_batch;
  // Crossovers measured on the H100 (docs/benchmarks.md): INT8 4, FP16 2. W4A8's packed layer
  // kernels (checked against the per-stage path by cuda_int4_gpu_test) take 2.55 ms a 2.8b step at
  // batch 1 against 3.69 per stage, and 8.49 against 6.63 at batch 8: the same crossover as INT8.
  return int8_ ? 4 : 2;
}

// The logits half of a decode step (EnqueueDecodeStep adds the token selection); serving calls it
// directly and selects tokens on the host.
Status CudaMambaModel::EnqueueDecodeLogits(int64_t B) {
  if (B < 1 || B > options_.max_batch) return InvalidArgumentError("decode batch out of range");
  if (UsePersistent(B)) {
    EmbeddingParams ep;
    ep.ids = dec_ids_.get(), ep.table = embeddings_.get(), ep.h = buf_->h.get(), ep.tokens = B, ep.d = d_;
    MQ_RETURN_IF_ERROR(LaunchEmbedding(ep, stream_.get()));
    dec_persist_.B = static_cast<int>(B);
    MQ_RETURN_IF_ERROR(LaunchDecodePersistent(dec_persist_, stream_.get()));
    dec_head_.B = static_cast<int>(B);
    dec_head_.pdl = false, dec_head_.l2_prefetch = false;  // the cooperative kernel holds every SM to its end
    MQ_RETURN_IF_ERROR(LaunchDecodeLmHead(dec_head_, stream_.get()));
  } else if (UseLayerKernels(B)) {
    EmbeddingParams ep;
    ep.ids = dec_ids_.get(), ep.table = embeddings_.get(), ep.h = buf_->h.get(), ep.tokens = B, ep.d = d_;
    MQ_RETURN_IF_ERROR(LaunchEmbedding(ep, stream_.get()));
    for (DecodeLayerParams& p : dec_layer_) {
      p.B = static_cast<int>(B);
      p.pdl = options_.decode_pdl, p.l2_prefetch = options_.decode_l2_prefetch;
      MQ_RETURN_IF_ERROR(LaunchDecodeLayer(p, stream_.get()));
    }
    dec_head_.B = static_cast<int>(B);
    dec_head_.pdl = options_.decode_pdl, dec_head_.l2_prefetch = options_.decode_l2_prefetch;
    MQ_RETURN_IF_ERROR(LaunchDecodeLmHead(dec_head_, stream_.get()));
  } else {
    MQ_RETURN_IF_ERROR(EnqueueForward(dec_ids_.get(), dec_slots_.get(), B, 1, LogitsMode::kLast));
  }
  return OkStatus();
}

Status CudaMambaModel::EnqueueDecodeStep(int64_t B) {
  MQ_RETURN_IF_ERROR(EnqueueDecodeLogits(B));
  return LaunchGreedy(NextTokenParams(B), stream_.get());
}

GreedyParams CudaMambaModel::NextTokenParams(int64_t B) const {
  GreedyParams g;
  g.logits = logits_.get(), g.batch = B, g.V = V_, g.next_ids = dec_ids_.get(), g.finished = finished_.get();
  g.out = out_tokens_.get(), g.step = step_.get(), g.max_steps = max_decode_steps_;
  g.eos_id = static_cast<int32_t>(config_.eos_token_id), g.pad_id = static_cast<int32_t>(config_.pad_token_id);
  g.sampling = sampling_;
  return g;
}

Status CudaMambaModel::PrepareDecode(int64_t B, bool use_graph) {
  if (B < 1 || B > options_.max_batch) return InvalidArgumentError("decode batch out of range");
  // One eager step first: cuBLASLt plans and kernel attributes are set up outside any capture.
  MQ_RETURN_IF_ERROR(EnqueueDecodeStep(B));
  MQ_RETURN_IF_ERROR(stream_.Synchronize());
  if (!use_graph || graphs_.count(B) != 0) return OkStatus();
  cudaGraph_t graph = nullptr;
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(stream_.get(), cudaStreamCaptureModeThreadLocal));
  const Status s = EnqueueDecodeStep(B);
  const cudaError_t end = cudaStreamEndCapture(stream_.get(), &graph);
  if (!s.ok()) {
    if (graph != nullptr) cudaGraphDestroy(graph);
    return s;
  }
  MQ_CUDA_RETURN_IF_ERROR(end);
  MQ_ASSIGN_OR_RETURN(CudaGraphExec exec, CudaGraphExec::Instantiate(graph));
  graphs_.emplace(B, std::move(exec));
  return OkStatus();
}

Status CudaMambaModel::DecodeStep(int64_t B, bool use_graph) {
  if (!use_graph) return EnqueueDecodeStep(B);
  auto it = graphs_.find(B);
  if (it == graphs_.end()) return FailedPreconditionError("decode graph for batch " + std::to_string(B) + " not prepared");
  return it->second.Launch(stream_.get());
}

StatusOr<std::vector<std::vector<int32_t>>> CudaMambaModel::Generate(
    const std::vector<std::vector<int32_t>>& prompts, const GenerationOptions& o, bool use_graph) {
  if (prompts.empty()) return std::vector<std::vector<int32_t>>{};
  const int64_t B = static_cast<int64_t>(prompts.size());
  const int64_t L = static_cast<int64_t>(prompts[0].size());
  if (L == 0) return InvalidArgumentError("empty prompt");
  for (const auto& p : prompts)
    if (static_cast<int64_t>(p.size()) != L) return InvalidArgumentError("batched prompts must have equal length");
  if (B > options_.max_batch) return InvalidArgumentError("too many prompts for max_batch");
  if (o.max_new_tokens < 1 || o.max_new_tokens > max_decode_steps_) return InvalidArgumentError("max_new_tokens out of range");
  std::vector<int32_t> ids, slots(static_cast<size_t>(B));
  for (const auto& p : prompts) ids.insert(ids.end(), p.begin(), p.end());
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
  MQ_RETURN_IF_ERROR(ValidateSampling(o.sampling));
  // Generation uses eos/pad and sampling from the options; captured decode graphs hold the old
  // ones in their selection kernel, so they are dropped when these change.
  if (config_.eos_token_id != o.eos_id || config_.pad_token_id != o.pad_id || !(sampling_ == o.sampling))
    graphs_.clear();
  config_.eos_token_id = o.eos_id;
  config_.pad_token_id = o.pad_id;
  sampling_ = o.sampling;
  if (use_graph) {
    // Capture against scratch state, then reset: capture itself runs nothing, but PrepareDecode's
    // warm-up step does.
    MQ_RETURN_IF_ERROR(PrepareDecode(B, true));
  }
  MQ_RETURN_IF_ERROR(ResetSlots(slots));
  MQ_RETURN_IF_ERROR(Forward(ids, slots, B, L, LogitsMode::kLast, nullptr));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(dec_slots_.get(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice, stream_.get()));
  MQ_RETURN_IF_ERROR(ResetDecodeCounters());
  MQ_RETURN_IF_ERROR(LaunchGreedy(NextTokenParams(B), stream_.get()));
  for (int64_t s = 1; s < o.max_new_tokens; ++s) MQ_RETURN_IF_ERROR(DecodeStep(B, use_graph));
  std::vector<int32_t> toks(static_cast<size_t>(o.max_new_tokens * B));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(toks.data(), out_tokens_.get(), toks.size() * 4, cudaMemcpyDeviceToHost, stream_.get()));
  MQ_RETURN_IF_ERROR(stream_.Synchronize());
  // Columns up to the step at which every row has produced eos (the CPU loop stops there).
  int64_t steps = o.max_new_tokens;
  int64_t all_done = -1;
  for (int64_t b = 0; b < B; ++b) {
    int64_t first = -1;
    for (int64_t s = 0; s < o.max_new_tokens && first < 0; ++s)
      if (toks[s * B + b] == o.eos_id) first = s;
    if (first < 0) { all_done = -1; break; }
    all_done = std::max(all_done, first);
  }
  if (all_done >= 0) steps = all_done + 1;
  std::vector<std::vector<int32_t>> out = prompts;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < steps; ++s) out[b].push_back(toks[s * B + b]);
  return out;
}

}  // namespace mq::cuda
