// The kernel ABI of the CUDA backend: one plain params struct per kernel (like mamba_ssm's
// selective_scan.h), filled on the host and passed by value, and one launcher per kernel that
// checks the launch and returns an mq::Status. Shapes are int64 on the host; kernels index with
// int64 where a product can pass 2^31.
//
// Layout conventions: activations are row-major [tokens, features] with a leading dimension
// `ld` (elements); token row t = b·L + l. INT8 activation rows are padded with zeros to a multiple
// of 16 features so that GEMV/GEMM reads are 16-byte chunks. Recurrent state lives in slots:
// conv state [E, K−1] and SSM state [E, N] per layer; slot_ids[b] names the slot of
// batch row b. A slot holds every layer's state contiguously ([slot][layer][E][·]), stored in the
// model's state dtype (model/state_dtype.h; int8 rows with float scales [slot][layer][E]).
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/l2_ahead_plan.h"  // L2Span
#include "eval/sampling.h"
#include "model/state_dtype.h"
#include "util/status.h"

namespace mq::cuda {

// How a kernel reads a linear layer's output (or any activation it consumes).
enum class ActKind : int {
  kNone = 0,      // absent (e.g. no residual to add before the first layer)
  kF16 = 1,       // half values
  kF32 = 2,       // float values
  kInt32Acc = 3,  // exact INT8 GEMM accumulators, dequantized on read: acc·row_scale[t]·col_scale[c]
};

struct ActView {
  ActKind kind = ActKind::kNone;
  const void* data = nullptr;
  int64_t ld = 0;
  const float* row_scale = nullptr;  // kInt32Acc: per-token activation scale s_x
  const float* col_scale = nullptr;  // kInt32Acc: per-channel weight scale s_w
  const float* bias = nullptr;       // optional, added after dequantization
};

// Per-token INT8 output: q[t, 0..cols) plus zero padding up to ld, and scale[t]. With
// static_scale > 0 every row uses that scale (per-tensor static activation quantization).
struct QuantOut {
  int8_t* q = nullptr;
  int64_t ld = 0;
  float* scale = nullptr;
  float static_scale = 0.0f;
};

// h[t] (+)= residual(t); y[r] = γ ⊙ RMSNorm(h[row(r)]) → half (out_f16) or INT8 (quant).
struct ResidualNormParams {
  float* h = nullptr;           // [T, d] float32 residual stream, updated in place when residual given
  ActView residual;             // kNone, kF32 or kInt32Acc
  const float* gamma = nullptr; // [d]
  float eps = 1e-5f;
  int64_t rows = 0;             // output rows
  int64_t d = 0;
  // Output row r reads h row r·row_stride + row_offset (last position of each sequence: L, L−1).
  int64_t row_stride = 1, row_offset = 0;
  __half* out_f16 = nullptr;    // [rows, ld_out] or null
  int64_t ld_out = 0;
  QuantOut quant;               // used when out_f16 is null
};

// u = SiLU(causal depthwise conv(u0)) over each sequence, continuing from the conv state.
struct CausalConvParams {
  ActView u0;                   // [T, ≥E] (the first E columns of in_proj's output)
  const float* weight = nullptr;  // [E, K]
  const float* bias = nullptr;    // [E]
  void* conv_state = nullptr;     // this layer's [E, K−1] block of slot 0 (in state_dtype) …
  int64_t slot_stride = 0;        // … and the distance (elements) between slots
  StateDtype state_dtype = StateDtype::kF32;
  float* conv_scale = nullptr;    // int8: this layer's [E] row scales of slot 0 …
  int64_t scale_slot_stride = 0;  // … and the distance between slots
  const int32_t* slot_ids = nullptr;  // [B]
  int64_t batch = 0, seqlen = 0, E = 0, K = 0;
  __half* out_f16 = nullptr;    // FP16 path: u as half [T, E]
  float* out_f32 = nullptr;     // INT8 path: u as float [T, E] (for the scan) …
  QuantOut quant;               // … and as INT8 (for x_proj) when quant.q is set
  L2Span l2_ahead;              // decode (seqlen 1): weights of a later kernel to prefetch into L2
};

// After x_proj: δ|B|C → float dbc [T, R+2N] (B, C for the scan) and δ for dt_proj as half or INT8.
struct XProjPostParams {
  ActView in;                   // [T, R+2N]
  int64_t tokens = 0, R = 0, N = 0;
  float* dbc = nullptr;         // [T, R+2N]
  __half* delta_f16 = nullptr;  // [T, ld_delta] (zero-padded), FP16 path
  int64_t ld_delta = 0;
  QuantOut quant;               // INT8 path
};

// Selective scan (prefill or one decode step) with the gate, from and into state slots.
struct SelectiveScanParams {
  int64_t batch = 0, seqlen = 0, E = 0, N = 0;  // N must be 16
  ActView delta;                // dt_proj output before bias/softplus (bias in delta.bias)
  ActView z;                    // gate input (columns E..2E of in_proj's output)
  const void* u = nullptr;      // [T, E]: half (FP16 path) or float (INT8 path)
  bool u_f32 = false;
  const float* dbc = nullptr;   // [T, R+2N] float; B at column R, C at column R+N
  int64_t dbc_ld = 0, R = 0;
  const float* A2 = nullptr;    // [E, N] = A·log2(e)
  const float* D = nullptr;     // [E]
  const float* gate_scale = nullptr;  // [E] S-SiLU scales, or null for SiLU
  void* ssm_state = nullptr;    // this layer's [E, N] block of slot 0 (in state_dtype) …
  int64_t slot_stride = 0;      // … and the distance (elements) between slots
  StateDtype state_dtype = StateDtype::kF32;
  float* ssm_scale = nullptr;   // int8: this layer's [E] row scales of slot 0 …
  int64_t scale_slot_stride = 0;  // … and the distance between slots
  const int32_t* slot_ids = nullptr;
  __half* y_f16 = nullptr;      // [T, E] gated output (FP16 path) …
  float* y_f32 = nullptr;       // … or float (INT8 path)
  // Scope `full` (INT8 path only; selective_scan_stepwise_kernel.cu): h·R4 online before the
  // output product ([N, N], or null), and y = h·C with h quantized per (step, channel) and C per
  // step, exact int32 products.
  const float* state_rotation = nullptr;
  bool quantize_output_product = false;
  // Calibration (FP16 prefill): max|h_t[c, n]| over steps and channels folded into [N] (atomicMax
  // on the float bits, so zero it first), or null.
  float* state_absmax = nullptr;
  L2Span l2_ahead;              // decode step (selective_scan_step_kernel.cu): weights to prefetch into L2
};

// Scope `full`'s conv input: out[t] = per-token INT8 fake quantization of x[t] (q·s, s = max|x_t|/127),
// exactly as the CPU's FakeQuantRows.
struct FakeQuantRowsParams {
  ActView x;                    // [T, ≥cols]
  int64_t rows = 0, cols = 0;
  float* out = nullptr;         // [T, cols] float
};

// x[t] ← x[t]·H̃ (randomized Hadamard, n = m·p) then per-token INT8; without a transform
// (m = p = 1 with scale null) it only quantizes.
struct HadamardQuantParams {
  const float* x = nullptr;     // [T, n]
  int64_t tokens = 0, n = 0;
  int m = 1;                    // small factor order (1, 12, 20, 28)
  int64_t p = 1;                // power-of-two factor
  const float* scale = nullptr; // [n] = sign/√n, or null for no transform
  const int8_t* mix = nullptr;  // [m, m]: mix[o·m + i] = H_m[i][o]
  QuantOut quant;
  bool pdl = false;             // launched with programmatic dependent launch (a decode step's graph)
};

// acc[t, o] = Σ_k x[t, k]·w[o, k], exact int32; k padded to a multiple of 16 (zeros).
struct Int8GemvParams {
  const int8_t* w = nullptr;    // [out, ldw]
  int64_t ldw = 0;
  const int8_t* x = nullptr;    // [tokens, ldx]
  int64_t ldx = 0;
  int32_t* acc = nullptr;       // [tokens, ldc]
  int64_t ldc = 0;
  int64_t out = 0, tokens = 0, k = 0;  // k = padded length
};

struct EmbeddingParams {
  const int32_t* ids = nullptr;  // [T]
  const float* table = nullptr;  // [V, d]
  float* h = nullptr;            // [T, d]
  int64_t tokens = 0, d = 0;
};

// Next-token selection for a decode batch, all on the device: next[b] = argmax(logits[b]) (lowest
// index among equal maxima) at temperature 0, else the token sampled from row b at this step as
// eval/sampling_math.h defines it (the CPU's SampleToken with sequence b); pad once the row has
// produced eos; appends to out[step, b].
struct GreedyParams {
  const float* logits = nullptr;  // [B, V]
  int64_t batch = 0, V = 0;
  int32_t* next_ids = nullptr;    // [B]: next step's input
  int32_t* finished = nullptr;    // [B] 0/1
  int32_t* out = nullptr;         // [max_steps, B]
  int32_t* step = nullptr;        // device step counter (incremented by block 0 … after all rows)
  int64_t max_steps = 0;
  int32_t eos_id = 0, pad_id = 1;
  SamplingOptions sampling;        // default: greedy
};

// Launchers (one .cu file each). All enqueue on `stream` and check the launch.
Status LaunchEmbedding(const EmbeddingParams& p, cudaStream_t stream);
Status LaunchResidualNorm(const ResidualNormParams& p, cudaStream_t stream);
Status LaunchCausalConv(const CausalConvParams& p, cudaStream_t stream);
Status LaunchXProjPost(const XProjPostParams& p, cudaStream_t stream);
Status LaunchSelectiveScan(const SelectiveScanParams& p, cudaStream_t stream);
// The time-outer scan of scope `full` (LaunchSelectiveScan hands quantized-product and rotated
// scans to it).
Status LaunchSelectiveScanStepwise(const SelectiveScanParams& p, cudaStream_t stream);
// One decode step (seqlen 1) with vectorized state traffic (LaunchSelectiveScan hands L = 1 to it).
Status LaunchSelectiveScanStep(const SelectiveScanParams& p, cudaStream_t stream);
Status LaunchFakeQuantRows(const FakeQuantRowsParams& p, cudaStream_t stream);
Status LaunchHadamardQuant(const HadamardQuantParams& p, cudaStream_t stream);
Status LaunchInt8Gemv(const Int8GemvParams& p, cudaStream_t stream);
Status LaunchGreedy(const GreedyParams& p, cudaStream_t stream);
// out[b] = the greedy token of logits row b ([B, V]): serve::GreedyToken's rule, on the device.
Status LaunchRowArgmax(const float* logits, int64_t B, int64_t V, int32_t* out, cudaStream_t stream);

// Random initialization on the device (benchmark models): uniform in [lo, hi).
Status LaunchFillUniformF32(float* x, int64_t n, float lo, float hi, uint64_t seed, cudaStream_t stream);
Status LaunchFillUniformF16(__half* x, int64_t rows, int64_t cols, int64_t ld, float lo, float hi, uint64_t seed,
                            cudaStream_t stream);
Status LaunchFillUniformI8(int8_t* x, int64_t rows, int64_t cols, int64_t ld, int lo, int hi, uint64_t seed,
                           cudaStream_t stream);
Status LaunchFillConstantF32(float* x, int64_t n, float value, cudaStream_t stream);

}  // namespace mq::cuda

namespace mq::cuda {

// ---- decode step kernels (decode_kernels.cu) ---------------------------------------------------
// A decode step of B ≤ kDecodeMaxBatch tokens runs four kernels per layer (five for INT8). Each is
// a GEMV with the small work before it fused in; every block repeats that small work for itself,
// so no kernel needs a grid-wide barrier:
//   1 h → RMSNorm → INT8 | half → in_proj → xz, and conv + SiLU → u in its epilogue (also the
//     LM head, with norm_f and no conv)
//   2 u → INT8 | half → x_proj → δ|B|C
//   3 dt_proj + softplus + scan step + gate, conv state shift → y   (4 lanes a channel)
//   4 INT8: 4a R2 Hadamard → INT8 (a block a token), 4b out_proj → h += ·
//     FP16: y → half → out_proj → h += ·
// Kernels go out with programmatic dependent launch: a kernel's blocks start while its
// predecessor still runs, issue their first weight loads and load their constants, then wait for
// its data.
constexpr int kDecodeMaxBatch = 8;

// A linear layer as the decode GEMV reads it: INT8 weights with per-row scales (INT8 models) or
// FP16 weights, [out, ld] with ld = in padded to 16 elements (zeros); W4A8 (DecodeLayerParams::
// int4): packed 4-bit levels (model/int4_pack.h), [out, ld/2] bytes.
struct DecodeLinear {
  const void* w = nullptr;
  int64_t ld = 0, out = 0, in = 0;
  const float* wscale = nullptr;   // INT8: [out]
  const float* bias = nullptr;     // [out] or null
  float act_static_scale = 0.0f;   // INT8: > 0 → per-tensor static activation scale
};

// Bytes of a decode weight row of ld elements as the kernels stream it: packed 4-bit (int4), INT8
// or FP16. The one definition for the decode kernels and the host's L2 look-ahead spans.
__host__ __device__ constexpr int64_t DecodeRowBytes(int64_t ld, bool int8, bool int4) {
  return int4 ? ld / 2 : int8 ? ld : 2 * ld;
}

struct DecodeLayerParams {
  bool int8 = false;               // INT8 linears with per-token INT8 activations; else FP16
  bool int4 = false;               // with int8: the four linears' weights packed 4-bit (W4A8)
  int B = 0;
  int64_t d = 0, E = 0, N = 0, R = 0, K = 0;
  float eps = 1e-5f;
  const int32_t* slots = nullptr;  // [B]
  float* h = nullptr;              // [B, d] residual stream; kernel 4 adds out_proj's output
  float* xz = nullptr;             // [B, 2E] in_proj output (dequantized, bias added)
  float* u = nullptr;              // [B, E] conv + SiLU output (kernel 1's epilogue)
  unsigned int* umax = nullptr;    // [B] |u| maxima as float bits (zero between layers)
  float* dbc = nullptr;            // [B, R+2N]
  float* y = nullptr;              // [B, E] gated scan output
  int8_t* yq = nullptr;            // INT8: [B, out_proj.ld] out_proj's input codes (kernel 4a) …
  float* ys = nullptr;             // … and their per-token scales [B]
  const float* norm = nullptr;     // [d]
  DecodeLinear in_proj, x_proj, dt_proj, out_proj;
  const float* conv_w = nullptr;   // [E, K]
  const float* conv_b = nullptr;   // [E]
  float* conv_state = nullptr;     // this layer's [E, K−1] block of slot 0 …
  int64_t conv_slot_stride = 0;    // … and the distance between slots
  const float* A2 = nullptr;       // [E, N] = A·log2(e)
  const float* D = nullptr;
  const float* gate_scale = nullptr;
  float* ssm_state = nullptr;      // this layer's [E, N] block of slot 0 …
  int64_t ssm_slot_stride = 0;
  const float* had_scale = nullptr;  // INT8 with R2: [E] = sign/√E; null: no online Hadamard
  const uint32_t* had_neg = nullptr; // [m]: bit i of had_neg[o] set where the mix's (o, i) entry is −1
  const int8_t* had_mix = nullptr;   // [m, m]: the same mix as HadamardQuantParams::mix
  int had_m = 1;
  int64_t had_p = 1;
  bool pdl = true;                 // programmatic dependent launch
  bool l2_prefetch = false;        // blocks bulk-prefetch their weight slice into L2 before waiting
  L2Span ahead_x;                  // kernel 2 (x_proj) prefetches it: this layer's out_proj weights …
  L2Span ahead_scan;               // … kernel 3 (scan): a prefix of the next linear's (in_proj or LM head)
};

// The LM head of a decode step: logits[b] = W · RMSNorm(h[b])·γ_f as half (FP16 weights).
struct DecodeLmHeadParams {
  int B = 0;
  int64_t d = 0;
  float eps = 1e-5f;
  const float* h = nullptr;        // [B, d]
  const float* norm_f = nullptr;   // [d]
  DecodeLinear head;               // FP16 [V, ld]
  float* logits = nullptr;         // [B, ld_logits]
  int64_t ld_logits = 0;
  bool pdl = true, l2_prefetch = false;
};

Status LaunchDecodeLayer(const DecodeLayerParams& p, cudaStream_t stream);
Status LaunchDecodeLmHead(const DecodeLmHeadParams& p, cudaStream_t stream);

}  // namespace mq::cuda
