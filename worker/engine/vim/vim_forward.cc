#include "vim/vim_forward.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/blas.h"
#include "cpu/parallel_for.h"
#include "cpu/selective_scan.h"
#include "model/linear.h"

namespace mq {
namespace {

inline float Silu(float x) { return x / (1.0f + std::exp(-x)); }
// torch.nn.functional.softplus with its default threshold 20 (the CUDA kernel's too).
inline float Softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }

// y = x / sqrt(mean(x²) + eps) · γ per row, the sum in double.
void RmsNormRows(const float* x, const float* gamma, float* y, int64_t rows, int64_t d, double eps) {
  cpu::ParallelFor(rows, 256, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const float* xr = x + r * d;
      double ss = 0.0;
      for (int64_t i = 0; i < d; ++i) ss += static_cast<double>(xr[i]) * xr[i];
      const float inv = static_cast<float>(1.0 / std::sqrt(ss / static_cast<double>(d) + eps));
      float* yr = y + r * d;
      for (int64_t i = 0; i < d; ++i) yr[i] = gamma[i] * (xr[i] * inv);
    }
  });
}

// Patch embedding as im2col + one GEMM: tok[b·M + g][d] over the row-major grid.
void PatchEmbed(const VimWeights& w, const float* images, int64_t batch, float* tok) {
  const VimConfig& c = w.config;
  const int64_t C = c.in_chans, H = c.img_size, P = c.patch_size, S = c.stride, G = c.grid_size();
  const int64_t M = c.num_patches(), CPP = w.patch_numel(), D = w.D();
  std::vector<float> cols(static_cast<size_t>(batch * M * CPP));
  cpu::ParallelFor(batch * M, 64, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / M, g = r % M, gi = g / G, gj = g % G;
      float* col = cols.data() + r * CPP;
      for (int64_t ch = 0; ch < C; ++ch)
        for (int64_t a = 0; a < P; ++a) {
          const float* src = images + ((b * C + ch) * H + gi * S + a) * H + gj * S;
          std::copy_n(src, P, col + (ch * P + a) * P);
        }
    }
  });
  cpu::MatMulTransposedB(cols.data(), w.patch_weight.data(), tok, batch * M, CPP, D);
  for (int64_t r = 0; r < batch * M; ++r)
    for (int64_t d = 0; d < D; ++d) tok[r * D + d] += w.patch_bias[d];
}

// Reverses the time axis of each image's [L, cols] block: the backward branch runs the forward
// computation on reversed time (as the official code does) and its output is reversed back.
void ReverseTime(const float* x, float* y, int64_t batch, int64_t L, int64_t cols) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < L; ++t) std::copy_n(x + (b * L + t) * cols, cols, y + (b * L + (L - 1 - t)) * cols);
}

// Scratch buffers of one branch, reused across layers.
struct BranchBuffers {
  std::vector<float> u, xdbc, delta_in, delta, h, y, c;
};

// Scope `full`: per-token symmetric INT8 quantize-dequantize of the conv1d input in place, with
// the scales of the INT8 linears (model/linear.h). Per token, so quantizing x once before both
// directions equals quantizing each direction's (time-reversed) copy.
void FakeQuantTokens(float* x, int64_t rows, int64_t cols) {
  std::vector<int8_t> q(static_cast<size_t>(cols));
  for (int64_t r = 0; r < rows; ++r) {
    float s;
    QuantizeRowsPerToken(x + r * cols, 1, cols, q.data(), &s);
    for (int64_t c = 0; c < cols; ++c) x[r * cols + c] = static_cast<float>(q[c]) * s;
  }
}

// Hands the scan's per-step h (the language path's ActivationSite::kSsmState) to a Vim observer
// under the direction's own site.
class StateObserver : public ForwardObserver {
 public:
  StateObserver(VimObserver* obs, VimSite site) : obs_(obs), site_(site) {}
  bool Wants(ActivationSite s) const override { return s == ActivationSite::kSsmState; }
  void Observe(int layer, ActivationSite, const float* x, int64_t rows, int64_t cols) override {
    obs_->Observe(layer, site_, x, rows, cols);
  }

 private:
  VimObserver* obs_;
  VimSite site_;
};

// One direction of the mixer on time-ordered input x [B·L, E] (already reversed for the
// backward branch): causal conv + SiLU, x_proj, dt_proj + softplus, selective scan from h = 0.
void RunBranch(const MambaLayerWeights& p, const float* x, int64_t batch, int64_t L, int64_t E, int64_t N,
               int64_t R, int64_t K, BranchBuffers& buf, bool reversed, VimObserver* obs, int layer) {
  const int64_t T = batch * L;
  buf.u.resize(static_cast<size_t>(T * E));
  cpu::ParallelFor(batch * E, 64, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / E, e = i % E;
      const float* wc = p.conv_weight.data() + e * K;
      for (int64_t t = 0; t < L; ++t) {
        float acc = p.conv_bias[e];
        for (int64_t k = 0; k < K; ++k) {
          const int64_t s = t - (K - 1) + k;
          if (s >= 0) acc += wc[k] * x[(b * L + s) * E + e];
        }
        buf.u[(b * L + t) * E + e] = Silu(acc);
      }
    }
  });
  // Observers see original time; row order does not change per-row or second-moment statistics,
  // so the reversed rows are handed over as they are.
  const VimSite xs = reversed ? VimSite::kXProjInputBackward : VimSite::kXProjInputForward;
  const VimSite ds = reversed ? VimSite::kDtProjInputBackward : VimSite::kDtProjInputForward;
  if (obs != nullptr && obs->Wants(xs)) obs->Observe(layer, xs, buf.u.data(), T, E);
  const int64_t W = R + 2 * N;
  buf.xdbc.resize(static_cast<size_t>(T * W));
  p.x_proj.Forward(buf.u.data(), T, buf.xdbc.data());
  buf.delta_in.resize(static_cast<size_t>(T * R));
  for (int64_t t = 0; t < T; ++t) std::copy_n(buf.xdbc.data() + t * W, R, buf.delta_in.data() + t * R);
  if (obs != nullptr && obs->Wants(ds)) obs->Observe(layer, ds, buf.delta_in.data(), T, R);
  const VimSite cs = reversed ? VimSite::kSsmCBackward : VimSite::kSsmCForward;
  if (obs != nullptr && obs->Wants(cs)) {
    buf.c.resize(static_cast<size_t>(T * N));
    for (int64_t t = 0; t < T; ++t) std::copy_n(buf.xdbc.data() + t * W + R + N, N, buf.c.data() + t * N);
    obs->Observe(layer, cs, buf.c.data(), T, N);
  }
  buf.delta.resize(static_cast<size_t>(T * E));
  p.dt_proj.Forward(buf.delta_in.data(), T, buf.delta.data());
  for (float& v : buf.delta) v = Softplus(v);

  buf.h.assign(static_cast<size_t>(batch * E * N), 0.0f);
  buf.y.resize(static_cast<size_t>(T * E));
  cpu::SelectiveScanParams sp;
  sp.batch = batch;
  sp.seqlen = L;
  sp.channels = E;
  sp.state = N;
  sp.u = buf.u.data();
  sp.delta = buf.delta.data();
  sp.A = p.A.data();
  sp.B = buf.xdbc.data() + R;
  sp.C = buf.xdbc.data() + R + N;
  sp.bc_stride = W;
  sp.D = p.D.data();
  sp.h = buf.h.data();
  sp.y = buf.y.data();
  sp.layer = layer;
  // Scope full: INT8 h·C (h per step, optionally rotated online by R4), the language path's scan.
  sp.quantize_output_product = p.quantize_output_product;
  sp.state_scale_per_channel = p.state_scale_per_channel;
  sp.state_rotation = p.state_rotation.empty() ? nullptr : p.state_rotation.data();
  StateObserver state_obs(obs, reversed ? VimSite::kSsmStateBackward : VimSite::kSsmStateForward);
  if (obs != nullptr && obs->Wants(reversed ? VimSite::kSsmStateBackward : VimSite::kSsmStateForward))
    sp.observer = &state_obs;
  cpu::SelectiveScan(sp);
}

}  // namespace

Status VimForward(const VimWeights& w, const float* images, int64_t batch, float* logits, VimObserver* obs) {
  const VimConfig& c = w.config;
  const int64_t D = w.D(), E = w.E(), N = w.N(), R = w.R(), K = w.K(), L = w.L();
  const int64_t M = c.num_patches(), cls = c.cls_token_index();
  if (batch <= 0) return InvalidArgumentError("batch must be positive");
  const int64_t T = batch * L;
  auto observe = [&](int layer, VimSite site, const float* x, int64_t rows, int64_t cols) {
    if (obs != nullptr && obs->Wants(site)) obs->Observe(layer, site, x, rows, cols);
  };

  // Tokens with the cls token in the middle, plus absolute positions (row cls included).
  std::vector<float> tok(static_cast<size_t>(batch * M * D));
  PatchEmbed(w, images, batch, tok.data());
  std::vector<float> res(static_cast<size_t>(T * D));
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < L; ++t) {
      const float* src = t < cls ? tok.data() + (b * M + t) * D
                                 : t == cls ? w.cls_token.data() : tok.data() + (b * M + t - 1) * D;
      float* dst = res.data() + (b * L + t) * D;
      for (int64_t d = 0; d < D; ++d) dst[d] = src[d] + w.pos_embed[t * D + d];
    }

  std::vector<float> xn(static_cast<size_t>(T * D)), xz(static_cast<size_t>(T * 2 * E));
  std::vector<float> x(static_cast<size_t>(T * E)), xr(static_cast<size_t>(T * E));
  std::vector<float> g(static_cast<size_t>(T * E)), hid(static_cast<size_t>(T * D));
  BranchBuffers fwd, bwd;
  const float out_scale = c.if_divide_out ? 0.5f : 1.0f;
  for (int64_t li = 0; li < c.depth; ++li) {
    const VimLayerWeights& lw = w.layers[static_cast<size_t>(li)];
    const int layer = static_cast<int>(li);
    // Fused add + norm: the residual takes the previous block's output first.
    if (li > 0)
      for (int64_t i = 0; i < T * D; ++i) res[i] += hid[i];
    RmsNormRows(res.data(), lw.mixer.norm.data(), xn.data(), T, D, c.norm_epsilon);
    observe(layer, VimSite::kInProjInput, xn.data(), T, D);
    lw.mixer.in_proj.Forward(xn.data(), T, xz.data());
    for (int64_t t = 0; t < T; ++t) std::copy_n(xz.data() + t * 2 * E, E, x.data() + t * E);
    // Scope full quantizes the conv1d input; both directions read the same x (the export sets
    // the flag on both, the loader checks they agree).
    if (lw.mixer.quantize_conv_input) FakeQuantTokens(x.data(), T, E);

    RunBranch(lw.mixer, x.data(), batch, L, E, N, R, K, fwd, false, obs, layer);
    ReverseTime(x.data(), xr.data(), batch, L, E);
    RunBranch(lw.backward, xr.data(), batch, L, E, N, R, K, bwd, true, obs, layer);
    ReverseTime(bwd.y.data(), xr.data(), batch, L, E);  // xr now holds y_b in original time

    // Both directions share the gate z; with the smooth-fused rotation SiLU(z) becomes
    // S-SiLU(z'; s) = z'·σ(s ⊙ z').
    const bool smooth = !lw.mixer.gate_scale.empty();
    const float* gs = lw.mixer.gate_scale.data();
    cpu::ParallelFor(T, 64, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) {
        const float* z = xz.data() + t * 2 * E + E;
        const float* yf = fwd.y.data() + t * E;
        const float* yb = xr.data() + t * E;
        float* gt = g.data() + t * E;
        for (int64_t e = 0; e < E; ++e) {
          const float gate = smooth ? z[e] / (1.0f + std::exp(-gs[e] * z[e])) : Silu(z[e]);
          gt[e] = (yf[e] * gate + yb[e] * gate) * out_scale;
        }
      }
    });
    observe(layer, VimSite::kOutProjInput, g.data(), T, E);
    lw.mixer.out_proj.Forward(g.data(), T, hid.data());
  }
  for (int64_t i = 0; i < T * D; ++i) res[i] += hid[i];

  // The head reads the final-normed cls token only.
  std::vector<float> feat(static_cast<size_t>(batch * D));
  for (int64_t b = 0; b < batch; ++b) std::copy_n(res.data() + (b * L + cls) * D, D, feat.data() + b * D);
  RmsNormRows(feat.data(), w.norm_f.data(), feat.data(), batch, D, c.norm_epsilon);
  observe(static_cast<int>(c.depth), VimSite::kHeadInput, feat.data(), batch, D);
  w.head.Forward(feat.data(), batch, logits);
  return OkStatus();
}

}  // namespace mq
