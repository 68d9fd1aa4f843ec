// The host bookkeeping of CudaSequenceBackend (cuda/cuda_sequence_backend.h), on the CPU: how
// serving options size the model, which decode buckets get a graph, and how a decode batch is
// padded onto the scratch slot. The GPU side is tests/engine/cuda_gpu_test.cc
// (CudaSequenceBackendTest), which skips without a device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <numeric>
#include <random>
#include <vector>

#include "cuda/cuda_sequence_backend.h"
#include "cuda/state_slots.h"

namespace mq::cuda {
namespace {

TEST(CudaSequenceBackendTwinTest, ServingOptionsSizeTheModel) {
  serve::SequenceBackendOptions o;  // defaults: 64 slots, batch 64, prefill 512, logit rows 512
  CudaModelOptions m = ServingModelOptions(o);
  EXPECT_EQ(m.num_slots, 64);
  EXPECT_EQ(m.max_batch, 64);
  EXPECT_EQ(m.max_tokens, 512);
  EXPECT_EQ(m.max_logit_rows, 512);
  // A decode batch larger than the prefill chunk and the logit rows still fits one forward.
  o.num_slots = 256, o.max_batch = 128, o.max_prefill_tokens = 64, o.max_logit_rows = 16;
  m = ServingModelOptions(o);
  EXPECT_EQ(m.num_slots, 256);
  EXPECT_EQ(m.max_batch, 128);
  EXPECT_EQ(m.max_tokens, 128);
  EXPECT_EQ(m.max_logit_rows, 128);
  o.num_slots = 4, o.max_batch = 2, o.max_prefill_tokens = 300, o.max_logit_rows = 100;
  m = ServingModelOptions(o);
  EXPECT_EQ(m.max_tokens, 300);
  EXPECT_EQ(m.max_logit_rows, 100);
  // The model's own option check (CudaMambaModel::Init) holds for every valid serving option set.
  for (int32_t slots : {1, 3, 64})
    for (int32_t batch : {1, 2, 3, 64})
      for (int32_t prefill : {1, 7, 512})
        for (int32_t rows : {1, 7, 512}) {
          o.num_slots = slots, o.max_batch = batch, o.max_prefill_tokens = prefill, o.max_logit_rows = rows;
          if (!serve::ValidateBackendOptions(o).ok()) continue;
          m = ServingModelOptions(o);
          EXPECT_TRUE(m.max_tokens >= 1 && m.max_batch >= 1 && m.num_slots >= m.max_batch && m.max_logit_rows >= 1);
          EXPECT_GE(m.max_tokens, m.max_batch);       // a decode step of max_batch rows
          EXPECT_GE(m.max_tokens, prefill);           // one prefill chunk
          EXPECT_GE(m.max_logit_rows, m.max_batch);   // decode logits [B, V]
          EXPECT_GE(m.max_logit_rows, rows);          // Score logits [n, V]
        }
}

TEST(CudaSequenceBackendTwinTest, DecodeBucketsCoverEveryBatch) {
  EXPECT_EQ(DecodeBuckets(1), (std::vector<int64_t>{1}));
  EXPECT_EQ(DecodeBuckets(2), (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(DecodeBuckets(6), (std::vector<int64_t>{1, 2, 4, 6}));
  EXPECT_EQ(DecodeBuckets(8), (std::vector<int64_t>{1, 2, 4, 8}));
  EXPECT_EQ(DecodeBuckets(64), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64}));
  EXPECT_EQ(DecodeBuckets(100), (std::vector<int64_t>{1, 2, 4, 8, 16, 32, 64, 100}));
  for (int64_t max_batch = 1; max_batch <= 130; ++max_batch) {
    const std::vector<int64_t> buckets = DecodeBuckets(max_batch);
    ASSERT_TRUE(std::is_sorted(buckets.begin(), buckets.end()));
    ASSERT_EQ(buckets.back(), max_batch);
    for (int64_t B = 1; B <= max_batch; ++B) {
      const int64_t bucket = DecodeBucket(B, max_batch);
      // The bucket Decode looks up has a graph, and it is the smallest one that holds B rows.
      auto it = std::lower_bound(buckets.begin(), buckets.end(), B);
      ASSERT_NE(it, buckets.end());
      EXPECT_EQ(*it, bucket) << "max_batch " << max_batch << " B " << B;
      EXPECT_LT(bucket, 2 * B) << "padding at most doubles a step";
    }
  }
}

// A step on a host "state pool": every row adds its id to its slot's state. Live slots must get
// exactly their own ids, slots outside the batch nothing, and padding only the scratch slot — the
// property the GPU relies on (padding rows never touch a live sequence).
TEST(CudaSequenceBackendTwinTest, PaddingRowsOnlyTouchTheScratchSlot) {
  const int32_t num_slots = 12;
  const int64_t max_batch = 8;
  StateSlotAllocator alloc(num_slots);
  std::vector<int32_t> owned;
  for (int i = 0; i < num_slots; ++i) owned.push_back(*alloc.Acquire());
  std::mt19937 g(7);
  std::vector<int64_t> pool(num_slots + 1, 0), expect(num_slots + 1, 0);
  std::map<int64_t, int> buckets_seen;
  for (int step = 0; step < 500; ++step) {
    std::vector<int32_t> slots = owned;
    std::shuffle(slots.begin(), slots.end(), g);
    const int64_t B = 1 + static_cast<int64_t>(g() % max_batch);
    slots.resize(static_cast<size_t>(B));
    std::vector<int32_t> ids(static_cast<size_t>(B));
    for (auto& id : ids) id = 1 + static_cast<int32_t>(g() % 1000);
    const int64_t bucket = DecodeBucket(B, max_batch);
    ++buckets_seen[bucket];
    std::vector<int32_t> row_slots(static_cast<size_t>(bucket)), row_ids(static_cast<size_t>(bucket));
    PadDecodeRows(slots.data(), ids.data(), B, bucket, alloc.scratch_slot(), 0, row_slots.data(), row_ids.data());
    // Same rows as the allocator's own padding of a batch.
    auto from_alloc = alloc.BatchSlots(slots, bucket);
    ASSERT_TRUE(from_alloc.ok());
    ASSERT_EQ(row_slots, *from_alloc);
    for (int64_t r = 0; r < bucket; ++r) pool[static_cast<size_t>(row_slots[r])] += row_ids[r];
    for (int64_t b = 0; b < B; ++b) expect[static_cast<size_t>(slots[b])] += ids[b];
    for (int64_t r = B; r < bucket; ++r) {
      EXPECT_EQ(row_slots[r], num_slots);
      EXPECT_EQ(row_ids[r], 0);
    }
  }
  for (int32_t s = 0; s < num_slots; ++s) EXPECT_EQ(pool[s], expect[s]) << "slot " << s;
  EXPECT_EQ(pool[num_slots], 0) << "padding feeds token 0";
  EXPECT_EQ(buckets_seen.size(), 4u) << "every bucket 1, 2, 4, 8 was exercised";
}

}  // namespace
}  // namespace mq::cuda
