// What the CUDA GPU tests share: a Status assertion and host ↔ device copies that fail the test
// (not abort it) when the copy fails.
#pragma once

#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cuda/device_buffer.h"
#include "util/status.h"

#define ASSERT_OK(expr)                                     \
  do {                                                      \
    const ::mq::Status s_ = (expr);                         \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.ToString(); \
  } while (0)

namespace mq::cuda {

template <typename T>
DeviceBuffer<T> Up(const std::vector<T>& v) {
  auto b = DeviceBuffer<T>::FromHost(v);
  EXPECT_TRUE(b.ok()) << b.status().ToString();
  return std::move(b).value();
}
template <typename T>
std::vector<T> Down(const DeviceBuffer<T>& b) {
  auto v = b.ToHost();
  EXPECT_TRUE(v.ok()) << v.status().ToString();
  return std::move(v).value();
}

}  // namespace mq::cuda
