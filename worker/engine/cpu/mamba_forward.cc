#include "cpu/mamba_forward.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "cpu/selective_scan.h"
#include "model/step_math.h"

namespace mq::cpu {
namespace {

void RmsNorm(const float* x, const float* gamma, float* y, int64_t rows, int64_t d, double eps) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    double ss = 0.0;
    for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
    const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
    float* yr = y + r * d;
    for (int64_t i = 0; i < d; ++i) yr[i] = gamma[i] * (xr[i] * inv);
  }
}

// SiLU, softplus (threshold 20), the conv step and the scan are model/step_math.h's: the GPU's
// decode kernels run the same operations, so a decode step agrees bit for bit.
using step_math::Silu;
using step_math::Softplus;

// Per-token symmetric INT8 quantize-dequantize in place (scope `full` conv input).
void FakeQuantRows(float* x, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    float* xr = x + r * cols;
    float amax = 0.0f;
    for (int64_t c = 0; c < cols; ++c) amax = std::max(amax, std::fabs(xr[c]));
    if (amax == 0.0f) continue;
    const float s = amax / 127.0f;
    for (int64_t c = 0; c < cols; ++c) xr[c] = std::clamp(std::nearbyint(xr[c] / s), -127.0f, 127.0f) * s;
  }
}

// Depthwise causal conv over each sequence, continuing from conv_state (the previous K−1
// inputs), followed by SiLU. Updates conv_state to the last K−1 inputs.
void CausalConvSilu(const float* u0, int64_t ld_u0, float* u, float* conv_state, const float* weight,
                    const float* bias, int64_t batch, int64_t L, int64_t E, int64_t K) {
  const int64_t S = K - 1;
  std::vector<float> window(static_cast<size_t>(S + L));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t c = 0; c < E; ++c) {
      float* st = conv_state + (b * E + c) * S;
      for (int64_t s = 0; s < S; ++s) window[s] = st[s];
      for (int64_t l = 0; l < L; ++l) window[S + l] = u0[(b * L + l) * ld_u0 + c];
      const float* wc = weight + c * K;
      for (int64_t l = 0; l < L; ++l)
        u[(b * L + l) * E + c] = step_math::ConvStepSilu(window.data() + l, wc, bias[c], K, window[l + S]);
      for (int64_t s = 0; s < S; ++s) st[s] = window[L + s];
    }
  }
}

}  // namespace

MambaState MambaState::Zeros(const MambaConfig& c, int64_t batch, StateDtype dtype) {
  MambaState s;
  s.batch = batch;
  s.dtype = dtype;
  s.conv.assign(static_cast<size_t>(c.num_hidden_layers * batch * c.intermediate_size * (c.conv_kernel - 1)), 0.0f);
  s.ssm.assign(static_cast<size_t>(c.num_hidden_layers * batch * c.intermediate_size * c.state_size), 0.0f);
  return s;
}

Status MambaForward(const MambaWeights& w, const int32_t* ids, int64_t batch, int64_t L, MambaState* state,
                    std::vector<float>* logits, const ForwardOptions& options) {
  const MambaConfig& cfg = w.config;
  const int64_t d = w.d(), E = w.E(), N = w.N(), R = w.R(), K = w.K(), V = w.V();
  const int64_t T = batch * L;
  if (batch <= 0 || L <= 0) return InvalidArgumentError("batch and sequence length must be positive");
  if (state == nullptr || state->batch != batch)
    return InvalidArgumentError("state batch " + std::to_string(state ? state->batch : -1) +
                                " does not match batch " + std::to_string(batch));
  for (int64_t i = 0; i < T; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      return InvalidArgumentError("token id " + std::to_string(ids[i]) + " outside the vocabulary [0, " +
                                  std::to_string(V) + ")");
  ForwardObserver* obs = options.observer;
  auto observe = [&](int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) {
    if (obs != nullptr && obs->Wants(site)) obs->Observe(layer, site, x, rows, cols);
  };

  std::vector<float> h(static_cast<size_t>(T * d));  // residual stream, float32
  for (int64_t t = 0; t < T; ++t) std::copy_n(w.embeddings.data() + ids[t] * d, d, h.data() + t * d);

  std::vector<float> xn(static_cast<size_t>(T * d)), xz(static_cast<size_t>(T * 2 * E));
  std::vector<float> u(static_cast<size_t>(T * E)), xdbc(static_cast<size_t>(T * (R + 2 * N)));
  std::vector<float> delta_in(static_cast<size_t>(T * R)), delta(static_cast<size_t>(T * E));
  std::vector<float> y(static_cast<size_t>(T * E)), o(static_cast<size_t>(T * d));
  std::vector<float> u0;
  const int64_t conv_state_per_layer = batch * E * (K - 1);
  const int64_t ssm_state_per_layer = batch * E * N;

  for (int64_t li = 0; li < cfg.num_hidden_layers; ++li) {
    const MambaLayerWeights& lw = w.layers[static_cast<size_t>(li)];
    const int layer = static_cast<int>(li);
    RmsNorm(h.data(), lw.norm.data(), xn.data(), T, d, cfg.layer_norm_epsilon);
    observe(layer, ActivationSite::kInProjInput, xn.data(), T, d);
    lw.in_proj.Forward(xn.data(), T, xz.data());

    // u0 = xz[:, :E] (strided); observers and the `full` scope need it contiguous.
    const float* conv_in = xz.data();
    int64_t conv_ld = 2 * E;
    if (lw.quantize_conv_input || (obs != nullptr && obs->Wants(ActivationSite::kConvInput))) {
      u0.resize(static_cast<size_t>(T * E));
      for (int64_t t = 0; t < T; ++t) std::copy_n(xz.data() + t * 2 * E, E, u0.data() + t * E);
      observe(layer, ActivationSite::kConvInput, u0.data(), T, E);
      if (lw.quantize_conv_input) FakeQuantRows(u0.data(), T, E);
      conv_in = u0.data();
      conv_ld = E;
    }
    CausalConvSilu(conv_in, conv_ld, u.data(), state->conv.data() + li * conv_state_per_layer, lw.conv_weight.data(),
                   lw.conv_bias.data(), batch, L, E, K);
    observe(layer, ActivationSite::kXProjInput, u.data(), T, E);

    lw.x_proj.Forward(u.data(), T, xdbc.data());
    for (int64_t t = 0; t < T; ++t) std::copy_n(xdbc.data() + t * (R + 2 * N), R, delta_in.data() + t * R);
    observe(layer, ActivationSite::kDtProjInput, delta_in.data(), T, R);
    lw.dt_proj.Forward(delta_in.data(), T, delta.data());
    for (float& v : delta) v = Softplus(v);

    if (obs != nullptr && obs->Wants(ActivationSite::kSsmC)) {
      std::vector<float> c(static_cast<size_t>(T * N));
      for (int64_t t = 0; t < T; ++t) std::copy_n(xdbc.data() + t * (R + 2 * N) + R + N, N, c.data() + t * N);
      observe(layer, ActivationSite::kSsmC, c.data(), T, N);
    }

    SelectiveScanParams sp;
    sp.batch = batch;
    sp.seqlen = L;
    sp.channels = E;
    sp.state = N;
    sp.u = u.data();
    sp.delta = delta.data();
    sp.A = lw.A.data();
    sp.B = xdbc.data() + R;
    sp.C = xdbc.data() + R + N;
    sp.bc_stride = R + 2 * N;
    sp.D = lw.D.data();
    sp.h = state->ssm.data() + li * ssm_state_per_layer;
    sp.y = y.data();
    sp.quantize_output_product = lw.quantize_output_product;
    sp.state_scale_per_channel = lw.state_scale_per_channel;
    sp.state_rotation = lw.state_rotation.empty() ? nullptr : lw.state_rotation.data();
    sp.observer = (obs != nullptr && obs->Wants(ActivationSite::kSsmState)) ? obs : nullptr;
    sp.layer = layer;
    SelectiveScan(sp);

    // Gate: y ⊙ SiLU(z), or with the smooth-fused rotation y ⊙ S-SiLU(z'; s) = y ⊙ z'·σ(s ⊙ z').
    for (int64_t t = 0; t < T; ++t) {
      const float* z = xz.data() + t * 2 * E + E;
      float* yt = y.data() + t * E;
      if (lw.gate_scale.empty()) {
        for (int64_t c = 0; c < E; ++c) yt[c] = step_math::Mul(yt[c], Silu(z[c]));
      } else {
        for (int64_t c = 0; c < E; ++c) yt[c] = step_math::Mul(yt[c], step_math::SmoothSilu(z[c], lw.gate_scale[c]));
      }
    }
    observe(layer, ActivationSite::kOutProjInput, y.data(), T, E);
    lw.out_proj.Forward(y.data(), T, o.data());
    for (int64_t i = 0; i < T * d; ++i) h[i] += o[i];
    observe(layer, ActivationSite::kLayerOutput, h.data(), T, d);
  }
  // The state store between forward calls: rows of one (layer, sequence, channel) each.
  RoundStateRows(state->dtype, state->conv.data(), cfg.num_hidden_layers * batch * E, K - 1);
  RoundStateRows(state->dtype, state->ssm.data(), cfg.num_hidden_layers * batch * E, N);

  if (options.skip_logits) return OkStatus();
  // Final norm and LM head, only on the rows whose logits are wanted.
  const int64_t rows = options.last_logits_only ? batch : T;
  std::vector<float> hf(static_cast<size_t>(rows * d));
  if (options.last_logits_only) {
    for (int64_t b = 0; b < batch; ++b) std::copy_n(h.data() + (b * L + L - 1) * d, d, hf.data() + b * d);
    RmsNorm(hf.data(), w.norm_f.data(), hf.data(), rows, d, cfg.layer_norm_epsilon);
  } else {
    RmsNorm(h.data(), w.norm_f.data(), hf.data(), rows, d, cfg.layer_norm_epsilon);
  }
  observe(static_cast<int>(cfg.num_hidden_layers), ActivationSite::kFinalNorm, hf.data(), rows, d);
  if (logits != nullptr) {
    logits->resize(static_cast<size_t>(rows * V));
    w.lm_head.Forward(hf.data(), rows, logits->data());
  }
  return OkStatus();
}

}  // namespace mq::cpu
