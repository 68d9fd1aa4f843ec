#include "classify_request.h"

#include <cmath>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace mq {

using mambaquant::v1::ClassifyRequest;

namespace {

// Pixel i of the request (packed float32 little-endian or values).
float PixelAt(const ClassifyRequest& r, int64_t i) {
  if (r.pixels_case() == ClassifyRequest::kValues) return r.values().values(static_cast<int>(i));
  float v;
  std::memcpy(&v, r.packed().data() + 4 * i, 4);
  return v;
}

}  // namespace

absl::Status CheckClassifyRequest(const ClassifyRequest& r) {
  if (r.shape_size() != 4)
    return absl::InvalidArgumentError(absl::StrCat("shape must be [batch, channels, height, width], got ", r.shape_size(),
                                                   " dimensions"));
  const int64_t batch = r.shape(0);
  if (batch < 1 || batch > ClassifyLimits::kMaxImages)
    return absl::InvalidArgumentError(absl::StrCat("the batch (shape[0]) must be in [1, ", ClassifyLimits::kMaxImages,
                                                   "] images, got ", batch));
  // Each dimension is bounded before the product, so the product cannot overflow.
  int64_t count = batch;
  for (int d = 1; d < 4; ++d) {
    if (r.shape(d) < 1 || r.shape(d) > ClassifyLimits::kMaxPixelBytes / 4)
      return absl::InvalidArgumentError(absl::StrCat("shape[", d, "] must be in [1, ", ClassifyLimits::kMaxPixelBytes / 4,
                                                     "], got ", r.shape(d)));
    count *= r.shape(d);
    if (count > ClassifyLimits::kMaxPixelBytes / 4)
      return absl::InvalidArgumentError(absl::StrCat("the images [", absl::StrJoin(r.shape(), ", "), "] are over the limit of ",
                                                     ClassifyLimits::kMaxPixelBytes, " bytes of float32 pixels per call"));
  }
  int64_t given = 0;
  switch (r.pixels_case()) {
    case ClassifyRequest::kPacked:
      if (r.packed().size() % 4 != 0)
        return absl::InvalidArgumentError(absl::StrCat("packed pixels are ", r.packed().size(), " bytes, not a multiple of 4 (float32)"));
      given = static_cast<int64_t>(r.packed().size() / 4);
      break;
    case ClassifyRequest::kValues:
      given = r.values().values_size();
      break;
    default:
      return absl::InvalidArgumentError("set the pixels (packed or values)");
  }
  if (given != count)
    return absl::InvalidArgumentError(absl::StrCat("shape [", absl::StrJoin(r.shape(), ", "), "] needs ", count,
                                                   " pixels, the request has ", given));
  if (r.top_k() < 0 || r.top_k() > ClassifyLimits::kMaxTopK)
    return absl::InvalidArgumentError(absl::StrCat("top_k must be in [0, ", ClassifyLimits::kMaxTopK, "], got ", r.top_k()));
  const int64_t per_image = count / batch;
  for (int64_t i = 0; i < count; ++i) {
    if (!std::isfinite(PixelAt(r, i)))
      return absl::InvalidArgumentError(absl::StrCat("pixel ", i % per_image, " of image ", i / per_image, " is not finite"));
  }
  return absl::OkStatus();
}

absl::Status CheckClassifyForModel(const ClassifyRequest& r, int64_t in_chans, int64_t img_size, int64_t num_classes) {
  if (r.shape(1) != in_chans || r.shape(2) != img_size || r.shape(3) != img_size)
    return absl::InvalidArgumentError(absl::StrCat("the model takes images of shape [batch, ", in_chans, ", ", img_size, ", ",
                                                   img_size, "], got [", absl::StrJoin(r.shape(), ", "), "]"));
  if (ClassifyTopK(r) > num_classes)
    return absl::InvalidArgumentError(absl::StrCat("top_k ", r.top_k(), " is over the model's ", num_classes, " classes"));
  if (r.shape(0) * num_classes * 4 > ClassifyLimits::kMaxLogitBytes)
    return absl::InvalidArgumentError(absl::StrCat(r.shape(0), " images × ", num_classes, " classes of logits are over the limit of ",
                                                   ClassifyLimits::kMaxLogitBytes, " bytes per answer: send fewer images"));
  return absl::OkStatus();
}

std::vector<float> ClassifyPixels(const ClassifyRequest& r) {
  if (r.pixels_case() == ClassifyRequest::kValues) return {r.values().values().begin(), r.values().values().end()};
  std::vector<float> out(r.packed().size() / 4);
  std::memcpy(out.data(), r.packed().data(), out.size() * 4);
  return out;
}

int32_t ClassifyTopK(const ClassifyRequest& r) { return r.top_k() == 0 ? 1 : r.top_k(); }

}  // namespace mq
