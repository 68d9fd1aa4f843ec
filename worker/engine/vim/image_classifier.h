// A Vision Mamba classifier loaded on one device: what a worker serves for `model_type: vim`
// models and what the backend plugin opens on the GPU. The CPU one wraps VimModel; the CUDA one
// lives in the plugin (BackendPlugin::open_classifier). Thread-safety: Classify may be called
// from one thread at a time per instance (device scratch buffers are per instance).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "util/status.h"
#include "vim/vim_config.h"

namespace mq {

class ImageClassifier {
 public:
  virtual ~ImageClassifier() = default;
  virtual const VimConfig& config() const = 0;
  virtual bool quantized() const = 0;
  virtual std::string device() const = 0;  // "cpu" or "cuda"
  // Images one Classify call accepts at most; callers split larger requests.
  virtual int64_t max_batch() const = 0;
  // images: [batch, in_chans, img_size, img_size] float32, already normalized;
  // logits: [batch, num_classes]. InvalidArgument for batch outside [1, max_batch()], null
  // pointers or non-finite pixels.
  virtual Status Classify(const float* images, int64_t batch, float* logits) = 0;
  // Device memory this classifier holds (0 on the CPU), for the worker's memory budget.
  virtual uint64_t device_bytes() const { return 0; }
};

// The CPU classifier (float or quantized export), the reference the CUDA one is checked against.
StatusOr<std::unique_ptr<ImageClassifier>> OpenCpuImageClassifier(const std::string& model_dir);

}  // namespace mq
