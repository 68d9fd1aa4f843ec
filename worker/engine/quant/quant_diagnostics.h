// Where a quantization loses accuracy, per layer and site, measured on the transformed float
// model just before its weights are quantized (quantize --diagnostics; the report's
// transform_notes.diagnostics):
//   weights:     ‖W − Q(W)‖_F / ‖W‖_F of in_proj, x_proj, dt_proj, out_proj with the job's bits and
//                clipping, and of the dt path's product W_dt·W_xp[δ] (basis-free: R5 and S5 cancel
//                in it, so it compares the dt path across transforms);
//   activations: ‖x − Q(x)‖ / ‖x‖ over the windows of the per-token INT8 quantization of each
//                linear's input as the quantizer sees it (after the online R2), and the ratio of
//                the largest channel RMS to the median (how outlier-heavy the site is); for
//                each linear, ‖Q(x)·Q(W)ᵀ − x·Wᵀ‖ / ‖x·Wᵀ‖ (output_error) and the same with the
//                weight alone quantized (output_error_weight_only): the error the next op sees.
#pragma once

#include <cstdint>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/mamba_weights.h"
#include "quant/quant_spec.h"
#include "util/status.h"

namespace mq::quant {

nlohmann::json WeightQuantErrors(const MambaWeights& w, const QuantSpec& spec);

StatusOr<nlohmann::json> ActivationQuantErrors(const MambaWeights& w, const QuantSpec& spec,
                                               const std::vector<int32_t>& tokens,
                                               const std::vector<int64_t>& starts, int64_t seq_len);

}  // namespace mq::quant
