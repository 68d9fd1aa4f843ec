// Shared by the CUDA Vim tests (cuda_vim_twin_test.cc on the CPU, cuda_vim_gpu_test.cc on the
// GPU): the vim-digits fixture (float model, reference logits, calibration and test images) and
// its quantized builds. MQ_VISION_FIXTURES_DIR, when set, replaces ../shared/fixtures/vision
// (the GPU machine gets the fixture there).
#pragma once

#include <cstdlib>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "test_paths.h"
#include "vim/vim_image_set.h"
#include "vim/vim_quantizer.h"
#include "vim/vim_weights.h"

namespace mq::testing {

inline std::string VisionFixture(const std::string& rel) {
  if (const char* dir = std::getenv("MQ_VISION_FIXTURES_DIR")) return std::string(dir) + "/" + rel;
  return SharedFixture("vision/" + rel);
}
inline bool HasVisionFixture() { return Exists(VisionFixture("vim-digits/model.safetensors")); }

#define MQ_REQUIRE_VISION_FIXTURE()                                                                 \
  if (!::mq::testing::HasVisionFixture())                                                           \
  GTEST_SKIP() << "fixture vision/vim-digits not found (set MQ_VISION_FIXTURES_DIR, or place it " \
                  "under " MQ_SHARED_FIXTURES_DIR "/vision)"

struct VimDigits {
  VimWeights model;
  ImageSet calib, test;
  std::vector<float> reference_logits;  // test_logits [300, 10]
};

// Loads the fixture; errors come back as a message (empty when it loaded).
inline std::string LoadVimDigits(VimDigits* d) {
  auto w = LoadVimWeights(VisionFixture("vim-digits"));
  if (!w.ok()) return w.status().ToString();
  d->model = std::move(*w);
  const std::string ref = VisionFixture("vim-digits-reference.safetensors");
  auto calib = LoadImageSet(ref, d->model.config, "calib_");
  auto test = LoadImageSet(ref, d->model.config, "test_");
  if (!calib.ok()) return calib.status().ToString();
  if (!test.ok()) return test.status().ToString();
  d->calib = std::move(*calib);
  d->test = std::move(*test);
  auto f = SafetensorsFile::Open(ref);
  if (!f.ok()) return f.status().ToString();
  const TensorView* lg = (*f)->Find("test_logits");
  if (lg == nullptr) return "test_logits missing";
  d->reference_logits = ToFloat32(*lg);
  return "";
}

// MambaQuant W8A8 of the fixture (online R2 Hadamard at out_proj, S-SiLU gate), with per-token
// or static per-tensor ("per_tensor") activation scales.
inline StatusOr<VimWeights> QuantizedVimDigits(const VimDigits& d, const std::string& act_granularity) {
  VimQuantizeOptions o;
  o.act_granularity = act_granularity;
  MQ_ASSIGN_OR_RETURN(VimQuantizedBuild b, BuildQuantizedVim(o, d.model, d.calib));
  return std::move(b.model);
}

}  // namespace mq::testing
