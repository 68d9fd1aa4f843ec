// Points of the forward pass whose activations calibration observes (and tests inspect).
#pragma once

#include <cstdint>

namespace mq {

enum class ActivationSite {
  kInProjInput,   // normalized residual x̂ entering in_proj [T, d]
  kConvInput,     // u0, the conv1d input [T, E]
  kXProjInput,    // u = SiLU(conv(u0)) entering x_proj [T, E]
  kDtProjInput,   // δ, the low-rank dt activations entering dt_proj [T, R]
  kOutProjInput,  // gated y entering out_proj [T, E] (before any online rotation)
  kSsmState,      // h_t for one time step [E, N] (scope full calibration)
  kSsmC,          // C entering y = h·C [T, N]
  kLayerOutput,   // residual stream after the layer [T, d]
  kFinalNorm,     // norm_f output [T, d]
};
const char* ActivationSiteName(ActivationSite site);

// Receives activations during a forward pass. Rows are tokens in sequence-major order
// (row b·L + l) unless the site says otherwise.
class ForwardObserver {
 public:
  virtual ~ForwardObserver() = default;
  virtual bool Wants(ActivationSite site) const = 0;
  virtual void Observe(int layer, ActivationSite site, const float* x, int64_t rows, int64_t cols) = 0;
};

}  // namespace mq
