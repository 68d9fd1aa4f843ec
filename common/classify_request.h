// The one owner of the Classify request contract (mambaquant.v1.ClassifyRequest): its limits and
// its checks. The server checks a request before routing it (and KServe ModelInfer becomes one),
// the worker again before it runs it, against the model it loaded: both with the same messages.
#pragma once

#include <cstdint>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mambaquant/v1/inference.pb.h"

namespace mq {

struct ClassifyLimits {
  // Images per call.
  static constexpr int64_t kMaxImages = 1024;
  // Pixel bytes per call (float32): far enough below the 8 MiB transport limit for the rest of
  // the message.
  static constexpr int64_t kMaxPixelBytes = int64_t{6} << 20;
  // Logit bytes per answer (images × num_classes × 4).
  static constexpr int64_t kMaxLogitBytes = int64_t{4} << 20;
  // Classes returned per image.
  static constexpr int32_t kMaxTopK = 1000;
};

// INVALID_ARGUMENT unless: `shape` has 4 dimensions, batch in [1, kMaxImages], every other
// dimension ≥ 1, the pixels at most kMaxPixelBytes and exactly batch·C·H·W of them (packed bytes
// or values), top_k in [0, kMaxTopK], and every pixel finite. Does not know the model.
absl::Status CheckClassifyRequest(const mambaquant::v1::ClassifyRequest& request);

// The request against the model that runs it: shape [B, in_chans, img_size, img_size],
// top_k ≤ num_classes, the logits within kMaxLogitBytes.
absl::Status CheckClassifyForModel(const mambaquant::v1::ClassifyRequest& request, int64_t in_chans, int64_t img_size,
                                   int64_t num_classes);

// The pixels as floats (call CheckClassifyRequest first).
std::vector<float> ClassifyPixels(const mambaquant::v1::ClassifyRequest& request);

// top_k as the call uses it (0 → 1).
int32_t ClassifyTopK(const mambaquant::v1::ClassifyRequest& request);

}  // namespace mq
