// The image-set reader (sizes, dtypes, labels checked against a model's config) and the
// classification metrics (top-1, accuracy, agreement, KL) against values computed by hand.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>

#include "io/safetensors_writer.h"
#include "vim/vim_image_set.h"
#include "vim/vim_metrics.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

VimConfig Digits() {
  VimConfig c;
  c.img_size = 8, c.patch_size = 2, c.stride = 2, c.in_chans = 1, c.embed_dim = 64, c.depth = 4;
  c.d_inner = 128, c.dt_rank = 4, c.num_classes = 10;
  return c;
}

class ImageSetTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = (fs::temp_directory_path() / ("mq_vim_images_" + std::to_string(::getpid()) + ".safetensors")).string();
  }
  void TearDown() override { fs::remove(path_); }
  void Write(std::vector<int64_t> shape, std::vector<float> px, std::vector<int64_t> labels, DType label_dtype = DType::kI64) {
    SafetensorsWriter w;
    w.AddF32("x_images", shape, px);
    if (!labels.empty()) {
      std::vector<uint8_t> bytes(labels.size() * 8);
      std::memcpy(bytes.data(), labels.data(), bytes.size());
      w.Add("x_labels", label_dtype, {static_cast<int64_t>(labels.size())}, bytes);
    }
    ASSERT_TRUE(w.Write(path_).ok());
  }
  std::string path_;
};

TEST_F(ImageSetTest, ReadsImagesAndLabels) {
  std::vector<float> px(2 * 64);
  for (size_t i = 0; i < px.size(); ++i) px[i] = 0.01f * static_cast<float>(i);
  Write({2, 1, 8, 8}, px, {3, 9});
  auto s = LoadImageSet(path_, Digits(), "x_");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->count, 2);
  EXPECT_EQ(s->images, px);
  EXPECT_EQ(s->labels, (std::vector<int64_t>{3, 9}));
  EXPECT_EQ(LoadImageSet(path_, Digits(), "").status().code(), StatusCode::kNotFound);  // no "images"
}

TEST_F(ImageSetTest, RejectsWhatTheModelCannotTake) {
  Write({2, 1, 8, 7}, std::vector<float>(2 * 56), {});
  EXPECT_EQ(LoadImageSet(path_, Digits(), "x_").status().code(), StatusCode::kInvalidArgument);  // geometry
  Write({1, 1, 8, 8}, std::vector<float>(64), {10});
  EXPECT_EQ(LoadImageSet(path_, Digits(), "x_").status().code(), StatusCode::kInvalidArgument);  // label ≥ classes
  Write({1, 1, 8, 8}, std::vector<float>(64), {-1});
  EXPECT_EQ(LoadImageSet(path_, Digits(), "x_").status().code(), StatusCode::kInvalidArgument);
  Write({2, 1, 8, 8}, std::vector<float>(128), {1});
  EXPECT_EQ(LoadImageSet(path_, Digits(), "x_").status().code(), StatusCode::kInvalidArgument);  // label count
  std::vector<float> px(64, 0.0f);
  px[7] = NAN;
  Write({1, 1, 8, 8}, px, {});
  EXPECT_EQ(LoadImageSet(path_, Digits(), "x_").status().code(), StatusCode::kInvalidArgument);
}

TEST(VimMetrics, TopAccuracyAgreementAndKl) {
  // Two images, three classes.
  const std::vector<float> ref = {1.0f, 3.0f, 2.0f, 0.0f, 0.0f, 5.0f};
  const std::vector<float> cand = {1.0f, 2.0f, 3.0f, 0.0f, 0.0f, 5.0f};
  EXPECT_EQ(TopClasses(ref, 3), (std::vector<int64_t>{1, 2}));
  EXPECT_DOUBLE_EQ(Accuracy(TopClasses(cand, 3), {2, 1}), 0.5);
  const LogitComparison c = CompareLogits(ref, cand, 3);
  EXPECT_DOUBLE_EQ(c.top1_agreement, 0.5);
  // KL of the first row by hand (the second rows are equal): p = softmax(1,3,2), q = softmax(1,2,3).
  const double zp = std::exp(1.0) + std::exp(3.0) + std::exp(2.0);
  const double p[3] = {std::exp(1.0) / zp, std::exp(3.0) / zp, std::exp(2.0) / zp};
  const double q[3] = {p[0], p[2], p[1]};
  double kl = 0;
  for (int i = 0; i < 3; ++i) kl += p[i] * std::log(p[i] / q[i]);
  EXPECT_NEAR(c.mean_kl, kl / 2.0, 1e-12);
  EXPECT_GT(c.mean_kl, 0.0);
}

}  // namespace
}  // namespace mq
