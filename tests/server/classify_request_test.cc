// The Classify request contract (common/classify_request.h): each limit and check answers
// INVALID_ARGUMENT at its boundary and not below it, and both pixel forms read the same floats.
#include "classify_request.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace mq {
namespace {

using mambaquant::v1::ClassifyRequest;

ClassifyRequest Packed(std::vector<int64_t> shape, const std::vector<float>& pixels) {
  ClassifyRequest r;
  r.mutable_shape()->Assign(shape.begin(), shape.end());
  r.set_packed(reinterpret_cast<const char*>(pixels.data()), pixels.size() * sizeof(float));
  return r;
}

std::vector<float> Ramp(size_t n) {
  std::vector<float> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = 0.25f * static_cast<float>(i) - 3.0f;
  return v;
}

TEST(ClassifyRequest, BothPixelFormsReadTheSameFloats) {
  const std::vector<float> px = Ramp(2 * 3 * 4 * 4);
  ClassifyRequest packed = Packed({2, 3, 4, 4}, px);
  ClassifyRequest values = packed;
  values.mutable_values()->mutable_values()->Assign(px.begin(), px.end());
  ASSERT_TRUE(CheckClassifyRequest(packed).ok());
  ASSERT_TRUE(CheckClassifyRequest(values).ok());
  EXPECT_EQ(ClassifyPixels(packed), px);
  EXPECT_EQ(ClassifyPixels(values), px);
  EXPECT_EQ(ClassifyTopK(packed), 1);
  packed.set_top_k(7);
  EXPECT_EQ(ClassifyTopK(packed), 7);
}

TEST(ClassifyRequest, ShapeAndCountsAreChecked) {
  EXPECT_EQ(CheckClassifyRequest(Packed({1, 4, 4}, Ramp(16))).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckClassifyRequest(Packed({0, 1, 4, 4}, {})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckClassifyRequest(Packed({1, 1, 0, 4}, {})).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckClassifyRequest(Packed({1, 1, -4, -4}, Ramp(16))).code(), absl::StatusCode::kInvalidArgument);
  // One pixel short, one too many, and a byte count that is not whole floats.
  EXPECT_EQ(CheckClassifyRequest(Packed({2, 1, 4, 4}, Ramp(31))).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckClassifyRequest(Packed({2, 1, 4, 4}, Ramp(33))).code(), absl::StatusCode::kInvalidArgument);
  ClassifyRequest odd = Packed({1, 1, 1, 1}, Ramp(1));
  odd.mutable_packed()->push_back('\0');
  EXPECT_EQ(CheckClassifyRequest(odd).code(), absl::StatusCode::kInvalidArgument);
  ClassifyRequest none;
  for (int64_t d : {1, 1, 1, 1}) none.add_shape(d);
  EXPECT_EQ(CheckClassifyRequest(none).code(), absl::StatusCode::kInvalidArgument);
  // Dimensions whose product overflows int64 are refused, not wrapped.
  const int64_t big = int64_t{1} << 40;
  EXPECT_EQ(CheckClassifyRequest(Packed({1, big, big, big}, Ramp(1))).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClassifyRequest, LimitsHoldAtTheirBoundary) {
  // kMaxImages images of one pixel pass; one more does not.
  EXPECT_TRUE(CheckClassifyRequest(Packed({ClassifyLimits::kMaxImages, 1, 1, 1}, Ramp(ClassifyLimits::kMaxImages))).ok());
  EXPECT_EQ(CheckClassifyRequest(Packed({ClassifyLimits::kMaxImages + 1, 1, 1, 1}, Ramp(ClassifyLimits::kMaxImages + 1))).code(),
            absl::StatusCode::kInvalidArgument);
  // Exactly kMaxPixelBytes of pixels pass (one image of 1 × 1 × n); 4 bytes more do not.
  const int64_t n = ClassifyLimits::kMaxPixelBytes / 4;
  EXPECT_TRUE(CheckClassifyRequest(Packed({1, 1, 1, n}, std::vector<float>(static_cast<size_t>(n), 0.5f))).ok());
  EXPECT_EQ(CheckClassifyRequest(Packed({1, 1, 1, n + 1}, std::vector<float>(static_cast<size_t>(n + 1), 0.5f))).code(),
            absl::StatusCode::kInvalidArgument);
  ClassifyRequest top = Packed({1, 1, 1, 1}, Ramp(1));
  top.set_top_k(ClassifyLimits::kMaxTopK);
  EXPECT_TRUE(CheckClassifyRequest(top).ok());
  top.set_top_k(ClassifyLimits::kMaxTopK + 1);
  EXPECT_EQ(CheckClassifyRequest(top).code(), absl::StatusCode::kInvalidArgument);
  top.set_top_k(-1);
  EXPECT_EQ(CheckClassifyRequest(top).code(), absl::StatusCode::kInvalidArgument);
}

TEST(ClassifyRequest, NonFinitePixelsAreNamed) {
  for (float bad : {std::numeric_limits<float>::quiet_NaN(), std::numeric_limits<float>::infinity(),
                    -std::numeric_limits<float>::infinity()}) {
    std::vector<float> px = Ramp(3 * 2 * 2 * 2);
    px[2 * 8 + 5] = bad;  // image 2, pixel 5
    absl::Status s = CheckClassifyRequest(Packed({3, 2, 2, 2}, px));
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("pixel 5 of image 2 is not finite"), absl::string_view::npos) << s.message();
  }
}

TEST(ClassifyRequest, AgainstTheModel) {
  ClassifyRequest r = Packed({4, 1, 8, 8}, Ramp(4 * 64));
  EXPECT_TRUE(CheckClassifyForModel(r, 1, 8, 10).ok());
  absl::Status s = CheckClassifyForModel(r, 3, 8, 10);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("[batch, 3, 8, 8]"), absl::string_view::npos) << s.message();
  EXPECT_EQ(CheckClassifyForModel(r, 1, 16, 10).code(), absl::StatusCode::kInvalidArgument);
  r.set_top_k(10);
  EXPECT_TRUE(CheckClassifyForModel(r, 1, 8, 10).ok());
  r.set_top_k(11);
  EXPECT_EQ(CheckClassifyForModel(r, 1, 8, 10).code(), absl::StatusCode::kInvalidArgument);
  // Logits: 4 images × C classes × 4 bytes within kMaxLogitBytes, and just past it.
  r.set_top_k(1);
  const int64_t classes = ClassifyLimits::kMaxLogitBytes / (4 * 4);
  EXPECT_TRUE(CheckClassifyForModel(r, 1, 8, classes).ok());
  EXPECT_EQ(CheckClassifyForModel(r, 1, 8, classes + 1).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace mq
