// Turns a (transformed) float model into its quantized form: INT8/INT4 per-channel weights for
// every linear layer, activation quantization mode and static scales, and for scope `full` the
// INT8 conv1d and h·C.
#pragma once

#include "model/mamba_weights.h"
#include "quant/calibration.h"
#include "quant/quant_spec.h"
#include "util/status.h"

namespace mq::quant {

// `static_stats` (per-token maxima of each linear's input, after online transforms) is required
// when spec.act_mode is per-tensor static and ignored otherwise. `input_moments`, when given,
// holds the second moment E[x xᵀ] of each linear's input as its quantizer sees it (after the
// online R2): every row of a linear found there gets its range by OutputAwareRowQuant instead of
// spec.weight_clip. Float weights of quantized linears are released.
Status QuantizeModelWeights(MambaWeights& w, const QuantSpec& spec, const CalibrationStats* static_stats,
                            const CalibrationStats* input_moments = nullptr);

// Output-aware weight clipping (GPTQ-free): per row, the range c·max|w_row| with c on the MSE
// search's grid {1, 0.98, …, 0.5} that minimizes the error of the row's *output*,
// E[(x·(w − Q(w)))²] = eᵀ Σ e with Σ = E[x xᵀ] of the linear's input [cols²] (damped by 1 % of
// its mean diagonal, as GPTQ does, so that directions calibration never saw still count).
// The plain MSE search weighs every input channel alike; after a rotation the input's energy is
// concentrated in few directions (KLT) and the row's error along them is what the next op sees.
// Its limits. Σ is measured by a CPU forward of the transformed model (also for GPU jobs), so
// at most kOutputAwareClipMaxTokens calibration tokens go into it (the fixtures' 128 × 256
// protocol whole; 16 of 128 windows of 2048). Σ is cols² doubles per linear input and the
// search costs 2·rows·cols²·26 flops, so models wider than kOutputAwareClipMaxWidth keep the MSE
// search (E = 1536, the 130m shape: 19 MB per Σ, ~0.1 TFLOP per layer's out_proj; the 2.8b
// shape, E = 5120, would hold 27 GB of moments and a CPU forward of 2.8b parameters).
inline constexpr int64_t kOutputAwareClipMaxWidth = 1536;
inline constexpr int64_t kOutputAwareClipMaxTokens = 32768;
LinearQuant OutputAwareRowQuant(const std::vector<float>& w, int64_t rows, int64_t cols, int bits,
                                const std::vector<double>& sigma);

// Symmetric per-channel INT8 quantization of the depthwise conv weight [E, K] in place
// (values become q·s); returns the scales.
std::vector<float> QuantizeConvWeight(std::vector<float>& conv_weight, int64_t channels, int64_t kernel);

}  // namespace mq::quant
