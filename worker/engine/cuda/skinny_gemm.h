// The skinny INT8 GEMM (skinny_gemm_kernel.cu, plan in skinny_gemm_plan.h): the per-stage
// linears of a decode step with 9–64 tokens, INT8 or packed-int4 (W4A8) weights, on tensor cores.
// Same contract as the GEMVs and cuBLASLt's INT8 GEMM: exact int32 accumulators that the consumer
// dequantizes (acc·s_x·s_w + bias).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "util/status.h"

namespace mq::cuda {

struct SkinnyGemmParams {
  const int8_t* w8 = nullptr;   // [out, ldw] int8 levels, or
  const uint8_t* w4 = nullptr;  // [out, ldw/2] packed int4 (model/int4_pack.h), zero beyond k
  int64_t ldw = 0;              // row length in elements (a multiple of 16)
  const int8_t* x = nullptr;    // [tokens, ldx], zero in [k, ldx)
  int64_t ldx = 0;
  int32_t* acc = nullptr;       // [tokens, ldc]
  int64_t ldc = 0;
  int64_t out = 0, tokens = 0, k = 0;  // k = padded row length (a multiple of 16)
  bool pdl = false;  // launched with programmatic dependent launch (waits before reading x)
};

// Whether LaunchSkinnyGemm takes this shape: 1..64 tokens and a k whose per-rank slices fit the
// staging budget (k ≤ 8,192 at 64 tokens).
bool SkinnyGemmSupports(int64_t out, int64_t k, int64_t tokens);
Status LaunchSkinnyGemm(const SkinnyGemmParams& p, cudaStream_t stream);

}  // namespace mq::cuda
