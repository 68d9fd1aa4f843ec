// The persistent decode kernel's parameters and launcher (decode_persistent_kernel.cu, whose
// header comment describes the design; its plan is decode_persistent_plan.h).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/kernel_params.h"
#include "util/status.h"

namespace mq::cuda {

// Most tokens of one persistent decode step (hd::kPersistMaxBatch).
constexpr int kPersistentMaxBatch = 4;

// One layer as the persistent kernel reads it (an array of these lives on the device).
struct PersistentLayer {
  DecodeLinear in_proj, x_proj, dt_proj, out_proj;
  const float* norm = nullptr;      // [d]
  const float* conv_w = nullptr;    // [E, K]
  const float* conv_b = nullptr;    // [E]
  const float* A2 = nullptr;        // [E, N]
  const float* D = nullptr;         // [E]
  const float* gate_scale = nullptr;
  float* conv_state = nullptr;      // this layer's [E, K−1] block of slot 0 (slots conv_slot_stride apart)
  float* ssm_state = nullptr;       // this layer's [E, N] block of slot 0 (slots ssm_slot_stride apart)
  const float* had_scale = nullptr; // INT8 R2: [E] = sign/√E, or null
  const uint32_t* had_neg = nullptr;
  int had_m = 1;
  int64_t had_p = 1;
};

struct DecodePersistentParams {
  bool int8 = false, int4 = false;  // INT8 (W8A8), W4A8 with int4, else FP16
  int B = 0;                        // 1..kPersistentMaxBatch
  int64_t d = 0, E = 0, N = 0, R = 0, K = 0;
  float eps = 1e-5f;
  int64_t layers = 0;
  const PersistentLayer* layer = nullptr;  // [layers] on the device
  // Every layer's linears have the same padded row lengths (checked against layer 0 on the host).
  int64_t ld_in = 0, ld_x = 0, ld_dt = 0, ld_out = 0;
  bool hadamard = false;            // INT8: some layer has an R2 Hadamard (sizes shared memory)
  const int32_t* slots = nullptr;   // [B]
  int64_t conv_slot_stride = 0, ssm_slot_stride = 0;
  float* h = nullptr;               // [B, d] residual stream (in: embeddings; out: after the last layer)
  float* u = nullptr;               // [B, E] conv + SiLU output
  float* y = nullptr;               // [B, E] gated scan output
  unsigned int* umax = nullptr;     // [B] |u| maxima as float bits; zero between steps
  void* xacc = nullptr;             // [B, R+2N] x_proj split-K sums (int32 INT8, float FP16); zero between steps
  unsigned long long* barrier = nullptr;  // grid barrier counter, zero at allocation, never reset
  int grid = 0;                     // blocks (0: one per SM); tests pass fewer
};

// One decode step through every layer (h in, h out; the LM head is LaunchDecodeLmHead). Launched
// cooperatively (all blocks co-resident, or the launch fails).
Status LaunchDecodePersistent(const DecodePersistentParams& p, cudaStream_t stream);

}  // namespace mq::cuda
