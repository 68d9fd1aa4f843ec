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
// when spec.act_mode is per-tensor static and ignored otherwise. Float weights of quantized
// linears are released.
Status QuantizeModelWeights(MambaWeights& w, const QuantSpec& spec, const CalibrationStats* static_stats);

// Symmetric per-channel INT8 quantization of the depthwise conv weight [E, K] in place
// (values become q·s); returns the scales.
std::vector<float> QuantizeConvWeight(std::vector<float>& conv_weight, int64_t channels, int64_t kernel);

}  // namespace mq::quant
