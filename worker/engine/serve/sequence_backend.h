// The device side of serving: a loaded model with a pool of recurrent-state slots, one per live
// sequence. The continuous-batching loop (serve/serving_engine.h) drives it from one thread:
// prefill chunks of one sequence, and decode steps of every decoding sequence at once.
// Implementations: CpuSequenceBackend (the reference, CI) and the CUDA backend (loaded into the
// worker as a plugin, serve/backend_plugin.h). Every call is made from the loop's thread only.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/mamba_config.h"
#include "model/state_dtype.h"
#include "util/status.h"

namespace mq::serve {

// Sizes fixed when the backend is created: everything is allocated then, so a backend that was
// created never runs out of memory under load.
struct SequenceBackendOptions {
  int32_t num_slots = 64;          // recurrent-state slots (sequences alive at once)
  int32_t max_batch = 64;          // sequences of one decode step (≤ num_slots)
  int32_t max_prefill_tokens = 512;  // tokens of one Prefill call (the chunk of a long prompt)
  int32_t max_logit_rows = 512;    // rows of one Prefill call with all logits (Score)
  // Storage of the recurrent state between calls (model/state_dtype.h): fp32 exact; fp16, bf16,
  // int8 round it at every store (less memory and, on the GPU, less traffic a decode step).
  StateDtype state_dtype = StateDtype::kF32;
};

class SequenceBackend {
 public:
  virtual ~SequenceBackend() = default;

  virtual const MambaConfig& config() const = 0;
  virtual const SequenceBackendOptions& options() const = 0;
  // "cpu" or "cuda": where the arithmetic really runs.
  virtual std::string device() const = 0;
  // Bytes this model holds on its device (weights, state pool, batch buffers).
  virtual uint64_t memory_bytes() const = 0;

  // Zeroes the state of `slot` (a new sequence starts from it).
  virtual Status ResetSlot(int32_t slot) = 0;
  // Copies the whole recurrent state of `src` into `dst` (n > 1 completions share one prefill).
  virtual Status CopySlot(int32_t src, int32_t dst) = 0;
  // Runs `n` tokens (1..max_prefill_tokens) of the sequence in `slot`, continuing its state.
  // last_logits [V] receives the logits of the last position when not null; all_logits [n, V]
  // (n ≤ max_logit_rows) every position's when not null.
  virtual Status Prefill(int32_t slot, const int32_t* ids, int64_t n, float* last_logits, float* all_logits) = 0;
  // Prefill of B (1..max_batch) sequences of n tokens each in one forward (ids row-major [B, n],
  // B·n ≤ max_prefill_tokens, distinct slots), continuing each slot's state; last_logits [B, V].
  // The default runs them one by one through Prefill (the CPU reference: exact per sequence); the
  // GPU runs one forward of B·n tokens, so many prompts arriving together do not stall the
  // running streams once each.
  virtual Status PrefillBatch(const int32_t* slots, const int32_t* ids, int64_t B, int64_t n, float* last_logits);
  // One decode step of B (1..max_batch) sequences: row b feeds ids[b] to slots[b] (distinct slots).
  // logits: [B, V].
  virtual Status Decode(const int32_t* slots, const int32_t* ids, int64_t B, float* logits) = 0;
  // A decode step whose sequences are all plain greedy: next[b] = GreedyToken of row b's logits
  // (serve/token_sampler.h; -1 for a row without a finite logit). The default runs Decode and
  // picks on the host; the GPU picks on the device and copies B ids instead of B·V floats.
  virtual Status DecodeGreedy(const int32_t* slots, const int32_t* ids, int64_t B, int32_t* next);
  // Host memory of [max_batch, V] floats that Decode fills fastest (the GPU's pinned staging
  // buffer: passing it as `logits` saves a copy of B·V floats a step), valid while the backend
  // lives; null when any buffer is as good.
  virtual float* decode_logits_buffer() { return nullptr; }
};

// Checks the arguments every implementation receives (one place for the contract).
Status CheckPrefillArgs(const SequenceBackend& b, int32_t slot, const int32_t* ids, int64_t n, const float* all_logits);
Status CheckDecodeArgs(const SequenceBackend& b, const int32_t* slots, const int32_t* ids, int64_t B);
Status CheckPrefillBatchArgs(const SequenceBackend& b, const int32_t* slots, const int32_t* ids, int64_t B, int64_t n,
                             const float* last_logits);
Status CheckSlot(const SequenceBackend& b, int32_t slot);
Status ValidateBackendOptions(const SequenceBackendOptions& o);

}  // namespace mq::serve
