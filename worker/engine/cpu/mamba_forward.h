// The Mamba-1 forward pass on the CPU: the float32 reference and the exact INT8 path.
// One code path serves prefill (seqlen > 1) and decode (seqlen 1): both continue from `state`.
#pragma once

#include <cstdint>
#include <vector>

#include "model/activation_site.h"
#include "model/mamba_weights.h"
#include "model/state_dtype.h"
#include "util/status.h"

namespace mq::cpu {

// Recurrent state of a batch of sequences. The values are held as float; with a narrower `dtype`
// MambaForward rounds them at its end to what storing them in that dtype and reading them back
// gives (model/state_dtype.h): the state cache the GPU keeps in that dtype, defined here.
struct MambaState {
  int64_t batch = 0;
  StateDtype dtype = StateDtype::kF32;
  std::vector<float> conv;  // [layers, batch, E, K−1]: the last K−1 conv inputs u0, oldest first
  std::vector<float> ssm;   // [layers, batch, E, N]: h

  static MambaState Zeros(const MambaConfig& config, int64_t batch, StateDtype dtype = StateDtype::kF32);
};

struct ForwardOptions {
  bool last_logits_only = false;       // logits for the last position of each sequence only
  bool skip_logits = false;            // calibration needs no LM head
  ForwardObserver* observer = nullptr; // optional activation observer
};

// Runs `batch` sequences of `seqlen` tokens (ids row-major [batch, seqlen]) from `state`,
// updating it. logits: [batch·seqlen, V], or [batch, V] with last_logits_only.
Status MambaForward(const MambaWeights& w, const int32_t* ids, int64_t batch, int64_t seqlen, MambaState* state,
                    std::vector<float>* logits, const ForwardOptions& options = {});

}  // namespace mq::cpu
