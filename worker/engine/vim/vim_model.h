// The public Vision Mamba model API the service and mq-engine call: load a float or quantized
// model directory and classify batches of normalized images. Thread-safe: Classify is const and
// keeps its scratch on the stack of the call.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"
#include "vim/vim_config.h"
#include "vim/vim_weights.h"

namespace mq {

class VimModel {
 public:
  // Images per Classify call at most (larger batches are the caller's to split).
  static constexpr int64_t kMaxBatch = 1 << 16;

  // A float directory (config.json with model_type "vim" + model.safetensors with the official
  // key names) or a quantized export of one (config.json carries `quantization_config`).
  static StatusOr<std::unique_ptr<VimModel>> Load(const std::string& dir);
  // Wraps weights already in memory (quantization builds, tests). `quantization_config_json` is
  // empty for a float model.
  static std::unique_ptr<VimModel> FromWeights(VimWeights weights, std::string quantization_config_json = "");

  // image_size (img_size), in_chans and num_classes are what a caller needs.
  const VimConfig& config() const { return weights_.config; }
  const VimWeights& weights() const { return weights_; }
  bool quantized() const { return !quantization_config_json_.empty(); }
  const std::string& quantization_config_json() const { return quantization_config_json_; }

  // images: [batch, in_chans, img_size, img_size] float32, already normalized; logits:
  // [batch, num_classes]. InvalidArgument for batch outside [1, kMaxBatch], null pointers or
  // non-finite pixels.
  Status Classify(const float* images, int64_t batch, float* logits) const;

 private:
  VimModel(VimWeights w, std::string qc) : weights_(std::move(w)), quantization_config_json_(std::move(qc)) {}
  VimWeights weights_;
  std::string quantization_config_json_;
};

}  // namespace mq
