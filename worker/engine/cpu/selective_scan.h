// The selective scan of Mamba-1 on the CPU (float32 state):
//   h_t = exp(Δ_t ⊙ A) ⊙ h_{t−1} + (Δ_t ⊙ u_t) ⊗ B_t,   y_t = h_t · C_t + D ⊙ u_t
#pragma once

#include <cstdint>

#include "model/activation_site.h"

namespace mq::cpu {

struct SelectiveScanParams {
  int64_t batch = 0, seqlen = 0;  // rows are b·seqlen + l
  int64_t channels = 0;           // E
  int64_t state = 0;              // N
  const float* u = nullptr;       // [rows, E]
  const float* delta = nullptr;   // [rows, E], already softplus'ed
  const float* A = nullptr;       // [E, N]
  const float* B = nullptr;       // row r at B + r·bc_stride, N values
  const float* C = nullptr;       // row r at C + r·bc_stride, N values
  int64_t bc_stride = 0;
  const float* D = nullptr;       // [E]
  float* h = nullptr;             // [batch, E, N] in/out: the recurrent state
  float* y = nullptr;             // [rows, E] out

  // Scope `full`: y = Q(h_t·R4)·Q(C_t) with INT8 operands (h per time step, C per token) and
  // exact int32 products; R4 ([N, N], row vectors times R4) may be null.
  bool quantize_output_product = false;
  bool state_scale_per_channel = false;  // one scale per row of h (channel) instead of per step
  const float* state_rotation = nullptr;

  // Optional observer of h_t (rows E, cols N per step) for calibration.
  ForwardObserver* observer = nullptr;
  int layer = 0;
};

void SelectiveScan(const SelectiveScanParams& p);

}  // namespace mq::cpu
