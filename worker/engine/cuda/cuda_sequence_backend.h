// SequenceBackend on one GPU (serve/sequence_backend.h): a CudaMambaModel (FP16 for float models,
// INT8 linears for quantized exports) with a pool of recurrent-state slots, one per live sequence,
// plus the pool's scratch slot (index num_slots), which is never handed out.
//
// Prefill: one forward of B = 1, L = n on the sequence's slot (logits of the last or of every
// position). Decode: the B rows are padded to a bucket (DecodeBucket: powers of two up to
// max_batch, state_slots.h); padding rows feed token 0 to the scratch slot, so they never touch a
// live sequence. Each bucket's step (CudaMambaModel::EnqueueDecodeLogits: the layer kernels for
// small buckets, the per-stage kernels above) is captured as a CUDA graph when the backend is
// created, after one eager warm-up that builds the cuBLASLt plans: every buffer is allocated and
// every graph instantiated at creation, so a backend that opened never fails for memory under
// load. A step copies ids and slots in, replays the graph and copies [B, V] logits out through a
// pinned host buffer, then synchronizes.
//
// Determinism: a sequence's logits do not depend on the other rows' values, but they may differ
// in the last bits between batch sizes, because each bucket takes its own kernels (layer kernels
// vs per-stage, INT8 GEMV vs cuBLASLt) and cuBLASLt picks its algorithm per shape. Within one
// bucket, a replay is bit-reproducible. The CPU backend (serve/cpu_sequence_backend.h) is
// bit-identical across batch sizes; this one agrees with it within the GPU tests' tolerances.
//
// Every call is made from one thread (the serving loop's); the model's stream orders everything.
#pragma once

#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cuda/cuda_handles.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/state_slots.h"
#include "model/mamba_weights.h"
#include "serve/sequence_backend.h"
#include "util/status.h"

namespace mq::cuda {

// ---- host bookkeeping (no device needed; cuda_sequence_backend_twin_test checks it in CI) ----

// The model sizes for serving options: one forward holds the largest prefill chunk, the logits of
// a Score chunk and a full decode batch.
inline CudaModelOptions ServingModelOptions(const serve::SequenceBackendOptions& o) {
  CudaModelOptions m;
  m.max_tokens = std::max<int64_t>({o.max_prefill_tokens, o.max_logit_rows, o.max_batch});
  m.max_batch = o.max_batch;
  m.num_slots = o.num_slots;
  m.max_logit_rows = std::max<int64_t>(o.max_batch, o.max_logit_rows);
  m.state_dtype = o.state_dtype;
  return m;
}

// Every bucket DecodeBucket gives for batches 1..max_batch, ascending: 1, 2, 4, …, max_batch.
inline std::vector<int64_t> DecodeBuckets(int64_t max_batch) {
  std::vector<int64_t> out;
  for (int64_t b = 1; b <= max_batch;) {
    const int64_t bucket = DecodeBucket(b, max_batch);
    out.push_back(bucket);
    b = bucket + 1;
  }
  return out;
}

// Rows of a padded decode step: rows 0..B−1 are the live ones, B..bucket−1 feed `pad_id` to the
// scratch slot. B ≤ bucket (callers checked the arguments).
inline void PadDecodeRows(const int32_t* slots, const int32_t* ids, int64_t B, int64_t bucket, int32_t scratch_slot,
                          int32_t pad_id, int32_t* out_slots, int32_t* out_ids) {
  std::copy_n(slots, B, out_slots);
  std::copy_n(ids, B, out_ids);
  std::fill(out_slots + B, out_slots + bucket, scratch_slot);
  std::fill(out_ids + B, out_ids + bucket, pad_id);
}

// ---- the backend ----

class CudaSequenceBackend final : public serve::SequenceBackend {
 public:
  // Loads a model directory (float → FP16, quantized export → INT8) onto the current device.
  // RESOURCE_EXHAUSTED, saying how much was free and allocated, when the buffers do not fit.
  static StatusOr<std::unique_ptr<CudaSequenceBackend>> Open(const std::string& model_dir,
                                                             const serve::SequenceBackendOptions& options);
  static StatusOr<std::unique_ptr<CudaSequenceBackend>> Create(const MambaWeights& weights,
                                                               const serve::SequenceBackendOptions& options);
  ~CudaSequenceBackend() override;
  CudaSequenceBackend(const CudaSequenceBackend&) = delete;
  CudaSequenceBackend& operator=(const CudaSequenceBackend&) = delete;

  const MambaConfig& config() const override { return config_; }
  const serve::SequenceBackendOptions& options() const override { return options_; }
  std::string device() const override { return "cuda"; }
  // The engine's device allocations made for this backend (weights, state pool, activations,
  // logits, cuBLASLt workspace), counted by DeviceMemoryStats while it was created; the CUDA
  // context and the graphs' own small allocations are not included.
  uint64_t memory_bytes() const override { return bytes_; }

  Status ResetSlot(int32_t slot) override;
  Status CopySlot(int32_t src, int32_t dst) override;
  Status Prefill(int32_t slot, const int32_t* ids, int64_t n, float* last_logits, float* all_logits) override;
  Status PrefillBatch(const int32_t* slots, const int32_t* ids, int64_t B, int64_t n, float* last_logits) override;
  Status Decode(const int32_t* slots, const int32_t* ids, int64_t B, float* logits) override;
  float* decode_logits_buffer() override { return logits_host_.get(); }
  Status DecodeGreedy(const int32_t* slots, const int32_t* ids, int64_t B, int32_t* next) override;

  bool int8() const { return model_->int8(); }
  int32_t scratch_slot() const { return options_.num_slots; }
  const std::vector<int64_t>& decode_buckets() const { return buckets_; }

 private:
  struct PinnedFree {
    void operator()(void* p) const { cudaFreeHost(p); }
  };
  CudaSequenceBackend() = default;
  Status Init(const MambaWeights& weights);
  Status CaptureDecodeGraphs();
  // Copies the padded batch in and replays the bucket's graph (logits on the device).
  Status LaunchDecode(const int32_t* slots, const int32_t* ids, int64_t B);

  MambaConfig config_;
  serve::SequenceBackendOptions options_;
  std::unique_ptr<CudaMambaModel> model_;
  std::vector<int64_t> buckets_;      // DecodeBuckets(max_batch)
  std::vector<CudaGraphExec> graphs_;  // one per bucket
  std::unique_ptr<int32_t, PinnedFree> ids_host_;    // [max(max_prefill_tokens, max_batch)]
  std::unique_ptr<int32_t, PinnedFree> slots_host_;  // [max_batch]
  std::unique_ptr<float, PinnedFree> logits_host_;   // [max_batch, V]
  std::unique_ptr<int32_t, PinnedFree> next_host_;   // [max_batch]: DecodeGreedy's ids
  DeviceBuffer<int32_t> next_dev_;                   // [max_batch]
  uint64_t bytes_ = 0;
};

}  // namespace mq::cuda
