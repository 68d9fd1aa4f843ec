// Points of the Vim forward pass whose activations calibration observes. The language path's
// ActivationSite has one branch per layer; a Vim block has two (forward and backward scans)
// with their own x_proj and dt_proj, so the direction is part of the site.
#pragma once

#include <cstdint>

namespace mq {

enum class VimSite {
  kInProjInput,          // normalized residual entering the shared in_proj [T, D]
  kXProjInputForward,    // SiLU(conv(x)) entering x_proj [T, E]
  kXProjInputBackward,   // the same for x_proj_b, rows in original time
  kDtProjInputForward,   // the dt_rank slice of x_proj's output entering dt_proj [T, R]
  kDtProjInputBackward,  // the same for dt_proj_b
  kOutProjInput,         // (y_f + y_b)·gate / 2 entering out_proj [T, E] (before any online rotation)
  kSsmStateForward,      // h_t of the forward scan, one time step of one image [E, N] (scope full S4)
  kSsmStateBackward,     // the same for the backward scan (its steps in reversed time)
  kSsmCForward,          // C entering y = h·C of the forward scan [T, N] (scope full S4)
  kSsmCBackward,         // the same for the backward scan
  kHeadInput,            // norm_f of the cls token entering the head [B, D]
};
const char* VimSiteName(VimSite site);

// Receives activations during a Vim forward pass; rows are b·L + t (image-major) unless the site
// says otherwise.
class VimObserver {
 public:
  virtual ~VimObserver() = default;
  virtual bool Wants(VimSite site) const = 0;
  virtual void Observe(int layer, VimSite site, const float* x, int64_t rows, int64_t cols) = 0;
};

}  // namespace mq
