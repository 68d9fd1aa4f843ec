// SequenceBackend on the CPU reference forward (float32 or exact INT8, cpu/mamba_forward.h).
// Each sequence runs as its own batch-of-one forward, in prefill and in decode: a sequence's
// logits are then bit-identical whatever else is running (OpenBLAS takes other code paths for
// other row counts), so a request served among others returns exactly what it returns alone, and
// what `mq-engine generate` returns. Batching buys the GPU its speed, not the CPU reference.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "cpu/mamba_forward.h"
#include "model/model_loader.h"
#include "serve/sequence_backend.h"

namespace mq::serve {

class CpuSequenceBackend final : public SequenceBackend {
 public:
  // Loads a model directory (float or quantized export) and allocates every slot's state.
  static StatusOr<std::unique_ptr<CpuSequenceBackend>> Open(const std::string& model_dir, const SequenceBackendOptions& options);
  static StatusOr<std::unique_ptr<CpuSequenceBackend>> Create(std::shared_ptr<const MambaWeights> weights,
                                                              const SequenceBackendOptions& options);

  const MambaConfig& config() const override { return weights_->config; }
  const SequenceBackendOptions& options() const override { return options_; }
  std::string device() const override { return "cpu"; }
  uint64_t memory_bytes() const override { return bytes_; }
  Status ResetSlot(int32_t slot) override;
  Status CopySlot(int32_t src, int32_t dst) override;
  Status Prefill(int32_t slot, const int32_t* ids, int64_t n, float* last_logits, float* all_logits) override;
  Status Decode(const int32_t* slots, const int32_t* ids, int64_t B, float* logits) override;

 private:
  CpuSequenceBackend(std::shared_ptr<const MambaWeights> weights, const SequenceBackendOptions& options);
  std::shared_ptr<const MambaWeights> weights_;
  SequenceBackendOptions options_;
  std::vector<cpu::MambaState> slots_;  // one batch-of-one state per slot
  std::vector<float> logits_;           // [max(1, max_logit_rows), V] scratch
  uint64_t bytes_ = 0;
};

// Bytes of the parameters of a CPU model (for the memory budget).
uint64_t WeightBytes(const MambaWeights& w);

}  // namespace mq::serve
