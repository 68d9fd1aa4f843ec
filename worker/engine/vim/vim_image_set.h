// A labelled (or unlabelled) set of normalized images for classification, calibration and
// evaluation: a safetensors file with `{prefix}images` F32 [B, C, H, W] and optionally
// `{prefix}labels` I64 [B]. The one reader of that format (mq-engine classify / quantize and the
// worker use it), with every size and value checked against the model's config.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/status.h"
#include "vim/vim_config.h"

namespace mq {

struct ImageSet {
  int64_t count = 0;
  std::vector<float> images;    // [count, C, H, W]
  std::vector<int64_t> labels;  // [count], or empty when the file has none
};

// Most images one file may hold.
inline constexpr int64_t kMaxImageSetSize = int64_t{1} << 20;

// `prefix` selects the tensors (the vim-digits reference file holds "calib_images", "test_images"
// and "test_labels": prefixes "calib_" and "test_"). Errors name the file and the tensor.
StatusOr<ImageSet> LoadImageSet(const std::string& path, const VimConfig& config, const std::string& prefix = "");

// A set read without a model (a dataset upload, mqctl classify): the same tensors, sizes and
// values LoadImageSet checks, with the geometry the file itself declares (square images, C and
// H within VimConfig's bounds) and labels within [0, VimConfig::kMaxClasses); the model's own
// geometry and class count are checked when a job or a call uses the set.
struct ImageSetFile {
  ImageSet set;
  int64_t in_chans = 0;
  int64_t img_size = 0;
};
StatusOr<ImageSetFile> LoadImageSetFile(const std::string& path, const std::string& prefix = "");

}  // namespace mq
