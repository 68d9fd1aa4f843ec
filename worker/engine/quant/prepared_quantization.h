// A quantization job built up to its weight quantization: the transformed float model and what
// quantizing its weights needs (static activation ranges, the linear inputs' second moments for
// output-aware clipping). Weight-only choices (which layers keep 8-bit weights in a w4a8 model)
// are then tried without calibrating or transforming again: the accuracy-driven mode's
// mixed-precision trials (quant/accuracy_tuning.h). QuantizePrepared(p, w8_layers) is exactly the
// model BuildQuantizedModel builds for the same options with those w8_layers: one code path
// (RunBuild in quantize_pipeline.cc) computes the inputs and quantizes.
#pragma once

#include <vector>

#include "model/mamba_weights.h"
#include "quant/calibration.h"
#include "quant/quant_spec.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"

namespace mq::quant {

class QuantAccelerator;

// What QuantizeModelWeights reads besides the weights.
struct WeightQuantInputs {
  CalibrationStats static_stats;  // per_tensor activations: each linear input's per-token maxima
  CalibrationStats moments;       // output-aware clipping: E[x xᵀ] of each linear input
  bool output_clip = false;       // moments are used (mambaquant w4a8, weight_clip auto)
};

struct PreparedQuantization {
  QuantSpec spec;                       // the options' spec (its own w8_layers included)
  MambaWeights original;                // the float model as loaded
  MambaWeights transformed;             // transformed, still float
  std::vector<int32_t> holdout_tokens;  // the calibration tail held out (calib_holdout_fraction)
  WeightQuantInputs inputs;
};

// LOAD, CALIBRATE, TRANSFORM and the quantization inputs of `options` (not transform_only).
StatusOr<PreparedQuantization> PrepareQuantization(const QuantizeOptions& options, const ProgressCallback& progress,
                                                   QuantAccelerator& accel);

// The prepared model with quantized weights, the layers in `w8_layers` (checked against the model:
// w4a8 only, each below its layer count, no repeats) at 8 bits.
StatusOr<MambaWeights> QuantizePrepared(const PreparedQuantization& p, const std::vector<int>& w8_layers);

// Every layer of a prepared model quantized at both widths, once: Assemble(w8_layers) equals
// QuantizePrepared(p, w8_layers) bit for bit without rounding anything again (a layer's weight
// quantization reads only its own weights and statistics), so the accuracy-driven mode's
// mixed-precision trials cost one evaluation each, not a quantization of the whole model.
class LayerWidthChoices {
 public:
  static StatusOr<LayerWidthChoices> Create(const PreparedQuantization& p);
  StatusOr<MambaWeights> Assemble(const std::vector<int>& w8_layers) const;
  int64_t layers() const { return static_cast<int64_t>(narrow_.layers.size()); }

 private:
  MambaWeights narrow_;  // every layer at the spec's weight_bits (4)
  MambaWeights wide_;    // every layer at 8 bits
};

// The quantize stage's last step, shared by RunBuild and QuantizePrepared.
Status QuantizeWithInputs(MambaWeights& w, const QuantSpec& spec, const WeightQuantInputs& in);

}  // namespace mq::quant
