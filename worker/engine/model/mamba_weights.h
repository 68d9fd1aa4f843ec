// The parameters of a Mamba-1 model in the engine's working form (float32 on the host; INT8
// linears once quantized), loaded from a Hugging Face directory.
#pragma once

#include <string>
#include <vector>

#include "io/safetensors.h"
#include "model/linear.h"
#include "model/mamba_config.h"
#include "util/status.h"

namespace mq {

struct MambaLayerWeights {
  std::vector<float> norm;         // [d] RMSNorm γ (all ones once folded into in_proj)
  Linear in_proj;                  // [2E, d]: rows [0, E) give u0, rows [E, 2E) give z
  std::vector<float> conv_weight;  // [E, K] depthwise causal conv (HF stores [E, 1, K])
  std::vector<float> conv_bias;    // [E] (zeros when the model has none)
  Linear x_proj;                   // [R + 2N, E]: δ | B | C
  Linear dt_proj;                  // [E, R] with bias [E]
  std::vector<float> A_log;        // [E, N] as stored
  std::vector<float> A;            // [E, N] = −exp(A_log)
  std::vector<float> D;            // [E]
  Linear out_proj;                 // [d, E]
  // S-SiLU smoothing vector s of the smooth-fused rotation ([E]); empty means plain SiLU(z).
  std::vector<float> gate_scale;
  // Scope `full`: INT8 conv input (per token) and INT8 operands of y = h·C.
  bool quantize_conv_input = false;
  std::vector<float> conv_weight_scale;  // [E] when conv_weight holds INT8 values times these scales
  bool quantize_output_product = false;
  bool state_scale_per_channel = false;  // h scales per (step, channel) instead of per step
  std::vector<float> state_rotation;  // R4 [N, N] applied online to h; empty = none
};

struct MambaWeights {
  MambaConfig config;
  std::vector<float> embeddings;  // [V, d]
  std::vector<MambaLayerWeights> layers;
  std::vector<float> norm_f;      // [d]
  Linear lm_head;                 // [V, d] (a copy of the embeddings when tied)

  int64_t d() const { return config.hidden_size; }
  int64_t E() const { return config.intermediate_size; }
  int64_t N() const { return config.state_size; }
  int64_t R() const { return config.time_step_rank; }
  int64_t K() const { return config.conv_kernel; }
  int64_t V() const { return config.vocab_size; }
};

// Loads config.json and the safetensors weights of `dir` (float models; dtypes F32/F16/BF16
// are upcast to float32).
StatusOr<MambaWeights> LoadMambaWeights(const std::string& dir);
StatusOr<MambaWeights> LoadMambaWeights(const MambaConfig& config, const SafetensorsModel& tensors);

}  // namespace mq
