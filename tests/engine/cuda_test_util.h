// What the CUDA GPU tests share: a Status assertion and host ↔ device copies that fail the test
// (not abort it) when the copy fails.
#pragma once

#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "cuda/cuda_mamba_model.h"
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

// A random Mamba-1 model of width d for the GPU tests: d_inner 2d, state 16, conv 4, dt_rank
// ⌈d/16⌉, tied embeddings; bits 16 → FP16, 8 → INT8, 4 → W4A8 (packed weights).
inline RandomModelSpec RandomFamilySpec(int64_t d, int64_t layers, int bits, uint64_t seed, int64_t vocab = 1000) {
  RandomModelSpec spec;
  spec.config.vocab_size = vocab;
  spec.config.hidden_size = d;
  spec.config.intermediate_size = 2 * d;
  spec.config.state_size = 16;
  spec.config.num_hidden_layers = layers;
  spec.config.conv_kernel = 4;
  spec.config.time_step_rank = (d + 15) / 16;
  spec.config.expand = 2;
  spec.config.tie_word_embeddings = true;
  spec.int8 = bits != 16;
  spec.weight_bits = bits == 4 ? 4 : 8;
  spec.seed = seed;
  return spec;
}

}  // namespace mq::cuda
