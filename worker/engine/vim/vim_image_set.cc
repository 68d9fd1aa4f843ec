#include "vim/vim_image_set.h"

#include <cmath>

#include "io/safetensors.h"

namespace mq {

StatusOr<ImageSet> LoadImageSet(const std::string& path, const VimConfig& c, const std::string& prefix) {
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(path));
  const std::string key = prefix + "images", label_key = prefix + "labels";
  const TensorView* im = f->Find(key);
  if (im == nullptr) return NotFoundError(path + ": no tensor \"" + key + "\" (F32 [B, C, H, W] normalized images)");
  if (im->dtype != DType::kF32) return InvalidArgumentError(path + ": \"" + key + "\" must be F32, not " + DTypeName(im->dtype));
  const std::vector<int64_t> want_tail = {c.in_chans, c.img_size, c.img_size};
  if (im->shape.size() != 4 || std::vector<int64_t>(im->shape.begin() + 1, im->shape.end()) != want_tail)
    return InvalidArgumentError(path + ": \"" + key + "\" has shape " + ShapeToString(im->shape) +
                                "; the model takes [B, " + std::to_string(c.in_chans) + ", " +
                                std::to_string(c.img_size) + ", " + std::to_string(c.img_size) + "]");
  ImageSet s;
  s.count = im->shape[0];
  if (s.count < 1 || s.count > kMaxImageSetSize)
    return InvalidArgumentError(path + ": \"" + key + "\" holds " + std::to_string(s.count) + " images; 1 to " +
                                std::to_string(kMaxImageSetSize) + " are accepted");
  s.images = ToFloat32(*im);
  for (size_t i = 0; i < s.images.size(); ++i)
    if (!std::isfinite(s.images[i]))
      return InvalidArgumentError(path + ": image " + std::to_string(static_cast<int64_t>(i) / c.image_numel()) +
                                  " of \"" + key + "\" holds NaN or Inf");
  if (const TensorView* lb = f->Find(label_key)) {
    if (lb->dtype != DType::kI64 && lb->dtype != DType::kI32)
      return InvalidArgumentError(path + ": \"" + label_key + "\" must be I64");
    if (lb->shape != std::vector<int64_t>{s.count})
      return InvalidArgumentError(path + ": \"" + label_key + "\" has shape " + ShapeToString(lb->shape) +
                                  ", expected [" + std::to_string(s.count) + "]");
    MQ_ASSIGN_OR_RETURN(s.labels, ToInt64(*lb));
    for (size_t i = 0; i < s.labels.size(); ++i)
      if (s.labels[i] < 0 || s.labels[i] >= c.num_classes)
        return InvalidArgumentError(path + ": label " + std::to_string(s.labels[i]) + " of image " + std::to_string(i) +
                                    " is outside [0, " + std::to_string(c.num_classes) + ")");
  }
  return s;
}

StatusOr<ImageSetFile> LoadImageSetFile(const std::string& path, const std::string& prefix) {
  VimConfig c;
  {
    MQ_ASSIGN_OR_RETURN(std::unique_ptr<SafetensorsFile> f, SafetensorsFile::Open(path));
    const std::string key = prefix + "images";
    const TensorView* im = f->Find(key);
    if (im == nullptr) return InvalidArgumentError(path + ": no tensor \"" + key + "\" (F32 [B, C, H, W] normalized images)");
    if (im->shape.size() != 4 || im->shape[2] != im->shape[3] || im->shape[1] < 1 ||
        im->shape[1] > VimConfig::kMaxChannels || im->shape[2] < 1 || im->shape[2] > VimConfig::kMaxImageSize)
      return InvalidArgumentError(path + ": \"" + key + "\" has shape " + ShapeToString(im->shape) + "; images are [B, C, H, W] with H = W in [1, " +
                                  std::to_string(VimConfig::kMaxImageSize) + "] and C in [1, " +
                                  std::to_string(VimConfig::kMaxChannels) + "]");
    c.in_chans = im->shape[1];
    c.img_size = im->shape[2];
    c.num_classes = VimConfig::kMaxClasses;
  }
  // The one reader does the rest (dtype, count, finite values, labels).
  auto set = LoadImageSet(path, c, prefix);
  if (!set.ok()) return set.status().code() == StatusCode::kNotFound ? InvalidArgumentError(set.status().message()) : set.status();
  return ImageSetFile{*std::move(set), c.in_chans, c.img_size};
}

}  // namespace mq
