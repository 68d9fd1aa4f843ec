#include "serve/sequence_backend.h"

#include "serve/token_sampler.h"

#include <string>
#include <vector>

namespace mq::serve {

Status ValidateBackendOptions(const SequenceBackendOptions& o) {
  if (o.num_slots < 1 || o.num_slots > 65536) return InvalidArgumentError("state slots must be in [1, 65536], got " + std::to_string(o.num_slots));
  if (o.max_batch < 1 || o.max_batch > o.num_slots)
    return InvalidArgumentError("max batch must be in [1, slots=" + std::to_string(o.num_slots) + "], got " + std::to_string(o.max_batch));
  if (o.max_prefill_tokens < 1 || o.max_prefill_tokens > 65536)
    return InvalidArgumentError("prefill chunk must be in [1, 65536] tokens, got " + std::to_string(o.max_prefill_tokens));
  if (o.max_logit_rows < 1 || o.max_logit_rows > o.max_prefill_tokens)
    return InvalidArgumentError("logit rows must be in [1, prefill chunk], got " + std::to_string(o.max_logit_rows));
  if (o.state_dtype != StateDtype::kF32 && o.state_dtype != StateDtype::kF16 && o.state_dtype != StateDtype::kBF16 &&
      o.state_dtype != StateDtype::kInt8)
    return InvalidArgumentError("unknown state dtype " + std::to_string(static_cast<int>(o.state_dtype)));
  return OkStatus();
}

Status CheckSlot(const SequenceBackend& b, int32_t slot) {
  if (slot < 0 || slot >= b.options().num_slots)
    return InvalidArgumentError("state slot " + std::to_string(slot) + " out of range [0, " + std::to_string(b.options().num_slots) + ")");
  return OkStatus();
}

namespace {
Status CheckIds(const SequenceBackend& b, const int32_t* ids, int64_t n) {
  const int64_t V = b.config().vocab_size;
  for (int64_t i = 0; i < n; ++i)
    if (ids[i] < 0 || ids[i] >= V)
      return InvalidArgumentError("token id " + std::to_string(ids[i]) + " out of range [0, " + std::to_string(V) + ")");
  return OkStatus();
}
}  // namespace

Status CheckPrefillArgs(const SequenceBackend& b, int32_t slot, const int32_t* ids, int64_t n, const float* all_logits) {
  MQ_RETURN_IF_ERROR(CheckSlot(b, slot));
  if (ids == nullptr || n < 1 || n > b.options().max_prefill_tokens)
    return InvalidArgumentError("prefill of " + std::to_string(n) + " tokens; the chunk is 1.." + std::to_string(b.options().max_prefill_tokens));
  if (all_logits != nullptr && n > b.options().max_logit_rows)
    return InvalidArgumentError("prefill with every position's logits takes at most " + std::to_string(b.options().max_logit_rows) + " tokens");
  return CheckIds(b, ids, n);
}

Status CheckDecodeArgs(const SequenceBackend& b, const int32_t* slots, const int32_t* ids, int64_t B) {
  if (slots == nullptr || ids == nullptr || B < 1 || B > b.options().max_batch)
    return InvalidArgumentError("decode batch of " + std::to_string(B) + "; the maximum is " + std::to_string(b.options().max_batch));
  std::vector<bool> seen(static_cast<size_t>(b.options().num_slots), false);
  for (int64_t i = 0; i < B; ++i) {
    MQ_RETURN_IF_ERROR(CheckSlot(b, slots[i]));
    if (seen[static_cast<size_t>(slots[i])]) return InvalidArgumentError("slot " + std::to_string(slots[i]) + " twice in one decode step");
    seen[static_cast<size_t>(slots[i])] = true;
  }
  return CheckIds(b, ids, B);
}

Status CheckPrefillBatchArgs(const SequenceBackend& b, const int32_t* slots, const int32_t* ids, int64_t B, int64_t n,
                             const float* last_logits) {
  if (last_logits == nullptr) return InvalidArgumentError("a batched prefill needs a logits buffer");
  if (n < 1 || B < 1 || B * n > b.options().max_prefill_tokens)
    return InvalidArgumentError("batched prefill of " + std::to_string(B) + " x " + std::to_string(n) +
                                " tokens; at most " + std::to_string(b.options().max_prefill_tokens) + " in all");
  MQ_RETURN_IF_ERROR(CheckDecodeArgs(b, slots, ids, B));  // B ≤ max_batch, distinct slots in range
  return CheckIds(b, ids, B * n);
}

Status SequenceBackend::PrefillBatch(const int32_t* slots, const int32_t* ids, int64_t B, int64_t n, float* last_logits) {
  MQ_RETURN_IF_ERROR(CheckPrefillBatchArgs(*this, slots, ids, B, n, last_logits));
  const int64_t V = config().vocab_size;
  for (int64_t b = 0; b < B; ++b) MQ_RETURN_IF_ERROR(Prefill(slots[b], ids + b * n, n, last_logits + b * V, nullptr));
  return OkStatus();
}

Status SequenceBackend::DecodeGreedy(const int32_t* slots, const int32_t* ids, int64_t B, int32_t* next) {
  MQ_RETURN_IF_ERROR(CheckDecodeArgs(*this, slots, ids, B));
  const int64_t V = config().vocab_size;
  float* logits = decode_logits_buffer();
  std::vector<float> own;
  if (logits == nullptr) {
    own.resize(static_cast<size_t>(B * V));
    logits = own.data();
  }
  MQ_RETURN_IF_ERROR(Decode(slots, ids, B, logits));
  for (int64_t b = 0; b < B; ++b) next[b] = GreedyToken(logits + b * V, V);
  return OkStatus();
}

}  // namespace mq::serve
