#include "cpu/selective_scan.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/parallel_for.h"
#include "model/linear.h"
#include "model/step_math.h"

namespace mq::cpu {
namespace {

// Float path: channel-outer so each channel's N-wide state stays in registers across time.
void ScanFloat(const SelectiveScanParams& p) {
  const int64_t E = p.channels, N = p.state, L = p.seqlen;
  // Channels are independent: threads split them (rows of one channel stay on one thread).
  // model/step_math.h, as the GPU's decode kernels: exp(Δ·A) = 2^(Δ·a2) with a2 = A·log2 e rounded
  // once, products and sums rounded one by one, Σ h·C in ascending n.
  ParallelFor(p.batch * E, 64, [&](int64_t begin, int64_t end) {
  std::vector<float> a2(static_cast<size_t>(N));
  for (int64_t bc = begin; bc < end; ++bc) {
    const int64_t b = bc / E, c = bc % E;
    {
      float* h = p.h + (b * E + c) * N;
      for (int64_t n = 0; n < N; ++n) a2[n] = step_math::ScanA2(p.A[c * N + n]);
      const float d = p.D[c];
      for (int64_t l = 0; l < L; ++l) {
        const int64_t r = b * L + l;
        const float dt = p.delta[r * E + c];
        const float uu = p.u[r * E + c];
        const float dtu = dt * uu;
        const float* Bt = p.B + r * p.bc_stride;
        const float* Ct = p.C + r * p.bc_stride;
        // The state update vectorizes; the sum stays in order.
        for (int64_t n = 0; n < N; ++n) h[n] = step_math::ScanState(h[n], a2[n], dt, dtu, Bt[n]);
        float acc = 0.0f;
        for (int64_t n = 0; n < N; ++n) acc = step_math::Add(acc, step_math::Mul(h[n], Ct[n]));
        p.y[r * E + c] = step_math::Add(acc, step_math::Mul(d, uu));
      }
    }
  }
  });
}

// Quantized-product / rotated / observed path: time-outer, because the per-step scale of h needs the
// whole [E, N] state of that step before any product.
void ScanStepwise(const SelectiveScanParams& p) {
  const int64_t E = p.channels, N = p.state, L = p.seqlen;
  std::vector<float> hr(static_cast<size_t>(E * N));
  std::vector<int8_t> qh(static_cast<size_t>(E * N));
  std::vector<int8_t> qc(static_cast<size_t>(N));
  std::vector<float> crow(static_cast<size_t>(N));
  std::vector<float> sh(static_cast<size_t>(E));
  std::vector<float> a2(static_cast<size_t>(E * N));
  for (int64_t i = 0; i < E * N; ++i) a2[static_cast<size_t>(i)] = step_math::ScanA2(p.A[i]);
  for (int64_t b = 0; b < p.batch; ++b) {
    float* hb = p.h + b * E * N;
    for (int64_t l = 0; l < L; ++l) {
      const int64_t r = b * L + l;
      const float* Bt = p.B + r * p.bc_stride;
      const float* Ct = p.C + r * p.bc_stride;
      for (int64_t c = 0; c < E; ++c) {
        float* h = hb + c * N;
        const float* a2c = a2.data() + c * N;
        const float dt = p.delta[r * E + c];
        const float dtu = dt * p.u[r * E + c];
        for (int64_t n = 0; n < N; ++n) h[n] = step_math::ScanState(h[n], a2c[n], dt, dtu, Bt[n]);
      }
      if (p.observer != nullptr) p.observer->Observe(p.layer, ActivationSite::kSsmState, hb, E, N);
      // Online R4 on the state rows; its transpose is folded into the C rows of x_proj, so the
      // rotation must be applied whether or not the product is quantized.
      const float* hq = hb;
      if (p.state_rotation != nullptr) {
        for (int64_t c = 0; c < E; ++c)
          for (int64_t j = 0; j < N; ++j) {
            float s = 0.0f;
            for (int64_t n = 0; n < N; ++n) s += hb[c * N + n] * p.state_rotation[n * N + j];
            hr[c * N + j] = s;
          }
        hq = hr.data();
      }
      if (!p.quantize_output_product) {
        for (int64_t c = 0; c < E; ++c) {
          float acc = 0.0f;
          for (int64_t n = 0; n < N; ++n) acc += hq[c * N + n] * Ct[n];
          p.y[r * E + c] = acc + p.D[c] * p.u[r * E + c];
        }
        continue;
      }
      // Scales of h: one for the step's whole [E, N] state, or one per channel row.
      float sh_step = 1.0f;
      if (p.state_scale_per_channel) {
        QuantizeRowsPerToken(hq, E, N, qh.data(), sh.data());
      } else {
        float amax = 0.0f;
        for (int64_t i = 0; i < E * N; ++i) amax = std::max(amax, std::fabs(hq[i]));
        sh_step = amax > 0.0f ? amax / 127.0f : 1.0f;
        QuantizeRowsStatic(hq, E, N, sh_step, qh.data());
      }
      float sc;
      std::copy(Ct, Ct + N, crow.begin());
      QuantizeRowsPerToken(crow.data(), 1, N, qc.data(), &sc);
      for (int64_t c = 0; c < E; ++c) {
        int32_t acc = 0;
        for (int64_t n = 0; n < N; ++n) acc += static_cast<int32_t>(qh[c * N + n]) * qc[n];
        const float scale_h = p.state_scale_per_channel ? sh[c] : sh_step;
        p.y[r * E + c] = static_cast<float>(acc) * scale_h * sc + p.D[c] * p.u[r * E + c];
      }
    }
  }
}

}  // namespace

void SelectiveScan(const SelectiveScanParams& p) {
  const bool stepwise = p.quantize_output_product || p.state_rotation != nullptr ||
                        (p.observer != nullptr && p.observer->Wants(ActivationSite::kSsmState));
  if (stepwise) {
    ScanStepwise(p);
  } else {
    ScanFloat(p);
  }
}

}  // namespace mq::cpu
