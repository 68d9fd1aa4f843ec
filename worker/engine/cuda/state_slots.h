// Bookkeeping of recurrent-state slots for batched decoding (host only; no CUDA needed, so the
// CPU twin tests it in CI). Every live sequence owns one slot of the device state pool; a decode
// batch is described by the slot of each row. Decode graphs are captured per batch bucket (powers
// of two up to the maximum batch); rows past the live sequences of a bucket point at the pool's
// scratch slot (index num_slots), so padding rows never touch a live sequence's state.
#pragma once

#include <cstdint>
#include <vector>

#include "util/status.h"

namespace mq::cuda {

class StateSlotAllocator {
 public:
  explicit StateSlotAllocator(int32_t num_slots);

  int32_t num_slots() const { return static_cast<int32_t>(used_.size()); }
  int32_t scratch_slot() const { return num_slots(); }  // the pool holds num_slots + 1 slots
  int32_t free_count() const { return free_; }
  bool in_use(int32_t slot) const;

  // The lowest free slot; RESOURCE_EXHAUSTED when every slot is taken.
  StatusOr<int32_t> Acquire();
  // FAILED_PRECONDITION for a slot that is not in use (double release), INVALID_ARGUMENT if out of range.
  Status Release(int32_t slot);

  // Slot ids for a decode batch of the live slots `live`, padded with the scratch slot to
  // `bucket` rows. INVALID_ARGUMENT if a slot is not in use, repeats, or live.size() > bucket.
  StatusOr<std::vector<int32_t>> BatchSlots(const std::vector<int32_t>& live, int64_t bucket) const;

 private:
  std::vector<bool> used_;
  int32_t free_ = 0;
};

// The graph bucket for a batch: the smallest power of two ≥ batch (batch ≥ 1), capped at max_batch.
int64_t DecodeBucket(int64_t batch, int64_t max_batch);

}  // namespace mq::cuda
