// The Vim CPU forward against the vim-digits fixture's float32 reference logits (an independent
// PyTorch implementation of the official forward; vim-forward.md).
#include <gtest/gtest.h>

#include <fstream>

#include <nlohmann/json.hpp>

#include "io/safetensors.h"
#include "test_paths.h"
#include "test_util.h"
#include "vim/vim_model.h"

namespace mq {
namespace {

std::string VisionFixture(const std::string& rel) { return testing::SharedFixture("vision/" + rel); }

#define MQ_REQUIRE_VISION_FIXTURE()                                                                        \
  if (!testing::Exists(VisionFixture("vim-digits/model.safetensors")))                                    \
  GTEST_SKIP() << "fixture vision/vim-digits not found under " MQ_SHARED_FIXTURES_DIR                     \
               << " (it lives in ../shared, not in the repository)"

struct Reference {
  std::vector<float> images, logits;
  std::vector<int64_t> labels;
  int64_t count = 0;
};

Reference LoadReference() {
  Reference r;
  auto f = SafetensorsFile::Open(VisionFixture("vim-digits-reference.safetensors"));
  EXPECT_TRUE(f.ok()) << f.status().ToString();
  if (!f.ok()) return r;
  const TensorView* im = (*f)->Find("test_images");
  const TensorView* lg = (*f)->Find("test_logits");
  const TensorView* lb = (*f)->Find("test_labels");
  EXPECT_TRUE(im && lg && lb);
  if (!(im && lg && lb)) return r;
  r.images = ToFloat32(*im);
  r.logits = ToFloat32(*lg);
  r.labels = *ToInt64(*lb);
  r.count = im->shape[0];
  return r;
}

int64_t Argmax(const float* x, int64_t n) { return std::max_element(x, x + n) - x; }

TEST(VimForward, FixtureLogitsEqualTheReference) {
  MQ_REQUIRE_VISION_FIXTURE();
  auto model = VimModel::Load(VisionFixture("vim-digits"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  const VimConfig& c = (*model)->config();
  EXPECT_EQ(c.seq_len(), 17);
  EXPECT_EQ(c.cls_token_index(), 8);
  Reference ref = LoadReference();
  ASSERT_EQ(ref.count, 300);
  ASSERT_EQ(static_cast<int64_t>(ref.images.size()), ref.count * c.image_numel());
  std::vector<float> logits(static_cast<size_t>(ref.count * c.num_classes));
  ASSERT_TRUE((*model)->Classify(ref.images.data(), ref.count, logits.data()).ok());
  const double rel = testing::RelError(logits.data(), ref.logits.data(), logits.size());
  EXPECT_LE(rel, 1e-4);
  double max_abs = 0;
  for (size_t i = 0; i < logits.size(); ++i) max_abs = std::max(max_abs, std::fabs(double(logits[i]) - ref.logits[i]));
  EXPECT_LE(max_abs, 1e-4);
  std::printf("vim-digits: ||d||/||ref|| = %.3g, max |d| = %.3g\n", rel, max_abs);

  // Top-1 agrees with the reference on every image, and the accuracy is reference.json's.
  int64_t correct = 0;
  for (int64_t i = 0; i < ref.count; ++i) {
    const int64_t top = Argmax(logits.data() + i * 10, 10);
    EXPECT_EQ(top, Argmax(ref.logits.data() + i * 10, 10)) << "image " << i;
    correct += top == ref.labels[i];
  }
  std::ifstream in(VisionFixture("reference.json"));
  const nlohmann::json j = nlohmann::json::parse(in);
  const double want = j["models"]["vim-digits"]["test_accuracy"].get<double>();
  EXPECT_DOUBLE_EQ(static_cast<double>(correct) / static_cast<double>(ref.count), want);
}

TEST(VimForward, BatchedEqualsOneImageAtATime) {
  MQ_REQUIRE_VISION_FIXTURE();
  auto model = VimModel::Load(VisionFixture("vim-digits"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  Reference ref = LoadReference();
  const int64_t n = 7, px = (*model)->config().image_numel();
  std::vector<float> batched(n * 10), single(n * 10);
  ASSERT_TRUE((*model)->Classify(ref.images.data(), n, batched.data()).ok());
  for (int64_t i = 0; i < n; ++i) ASSERT_TRUE((*model)->Classify(ref.images.data() + i * px, 1, single.data() + i * 10).ok());
  EXPECT_LE(testing::RelError(batched.data(), single.data(), batched.size()), 1e-6);
}

TEST(VimForward, ClassifyRejectsBadInput) {
  MQ_REQUIRE_VISION_FIXTURE();
  auto model = VimModel::Load(VisionFixture("vim-digits"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  std::vector<float> img((*model)->config().image_numel(), 0.0f), logits(10);
  EXPECT_EQ((*model)->Classify(img.data(), 0, logits.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ((*model)->Classify(nullptr, 1, logits.data()).code(), StatusCode::kInvalidArgument);
  img[5] = NAN;
  EXPECT_EQ((*model)->Classify(img.data(), 1, logits.data()).code(), StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq
