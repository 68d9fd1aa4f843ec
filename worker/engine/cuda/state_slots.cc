#include "cuda/state_slots.h"

#include <string>

namespace mq::cuda {

StateSlotAllocator::StateSlotAllocator(int32_t num_slots)
    : used_(static_cast<size_t>(num_slots > 0 ? num_slots : 0), false), free_(num_slots > 0 ? num_slots : 0) {}

bool StateSlotAllocator::in_use(int32_t slot) const {
  return slot >= 0 && slot < num_slots() && used_[static_cast<size_t>(slot)];
}

StatusOr<int32_t> StateSlotAllocator::Acquire() {
  for (int32_t s = 0; s < num_slots(); ++s) {
    if (!used_[static_cast<size_t>(s)]) {
      used_[static_cast<size_t>(s)] = true;
      --free_;
      return s;
    }
  }
  return ResourceExhaustedError("all " + std::to_string(num_slots()) + " state slots are in use");
}

Status StateSlotAllocator::Release(int32_t slot) {
  if (slot < 0 || slot >= num_slots()) return InvalidArgumentError("state slot " + std::to_string(slot) + " out of range");
  if (!used_[static_cast<size_t>(slot)])
    return FailedPreconditionError("state slot " + std::to_string(slot) + " is not in use");
  used_[static_cast<size_t>(slot)] = false;
  ++free_;
  return OkStatus();
}

StatusOr<std::vector<int32_t>> StateSlotAllocator::BatchSlots(const std::vector<int32_t>& live, int64_t bucket) const {
  if (static_cast<int64_t>(live.size()) > bucket)
    return InvalidArgumentError(std::to_string(live.size()) + " sequences do not fit a batch of " + std::to_string(bucket));
  std::vector<bool> seen(used_.size(), false);
  std::vector<int32_t> out;
  out.reserve(static_cast<size_t>(bucket));
  for (int32_t s : live) {
    if (!in_use(s)) return InvalidArgumentError("state slot " + std::to_string(s) + " is not in use");
    if (seen[static_cast<size_t>(s)]) return InvalidArgumentError("state slot " + std::to_string(s) + " appears twice");
    seen[static_cast<size_t>(s)] = true;
    out.push_back(s);
  }
  while (static_cast<int64_t>(out.size()) < bucket) out.push_back(scratch_slot());
  return out;
}

int64_t DecodeBucket(int64_t batch, int64_t max_batch) {
  int64_t b = 1;
  while (b < batch) b <<= 1;
  return b < max_batch ? b : max_batch;
}

}  // namespace mq::cuda
