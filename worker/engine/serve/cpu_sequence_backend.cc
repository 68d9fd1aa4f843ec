#include "serve/cpu_sequence_backend.h"

#include <algorithm>
#include <cstring>
#include <utility>

namespace mq::serve {
namespace {

uint64_t LinearBytes(const Linear& l) {
  uint64_t b = l.weight.size() * sizeof(float) + l.bias.size() * sizeof(float);
  if (l.quant) b += l.quant->qweight.size() + l.quant->weight_scale.size() * sizeof(float);
  return b;
}

template <typename T>
uint64_t VecBytes(const std::vector<T>& v) { return v.size() * sizeof(T); }

}  // namespace

uint64_t WeightBytes(const MambaWeights& w) {
  uint64_t b = VecBytes(w.embeddings) + VecBytes(w.norm_f) + LinearBytes(w.lm_head);
  for (const auto& L : w.layers) {
    b += VecBytes(L.norm) + LinearBytes(L.in_proj) + VecBytes(L.conv_weight) + VecBytes(L.conv_bias) +
         LinearBytes(L.x_proj) + LinearBytes(L.dt_proj) + VecBytes(L.A_log) + VecBytes(L.A) + VecBytes(L.D) +
         LinearBytes(L.out_proj) + VecBytes(L.gate_scale) + VecBytes(L.conv_weight_scale) + VecBytes(L.state_rotation);
  }
  return b;
}

CpuSequenceBackend::CpuSequenceBackend(std::shared_ptr<const MambaWeights> weights, const SequenceBackendOptions& options)
    : weights_(std::move(weights)), options_(options) {}

StatusOr<std::unique_ptr<CpuSequenceBackend>> CpuSequenceBackend::Open(const std::string& model_dir,
                                                                       const SequenceBackendOptions& options) {
  MQ_RETURN_IF_ERROR(ValidateBackendOptions(options));
  MQ_ASSIGN_OR_RETURN(LoadedModel model, LoadModel(model_dir));
  return Create(std::make_shared<const MambaWeights>(std::move(model.weights)), options);
}

StatusOr<std::unique_ptr<CpuSequenceBackend>> CpuSequenceBackend::Create(std::shared_ptr<const MambaWeights> weights,
                                                                         const SequenceBackendOptions& options) {
  MQ_RETURN_IF_ERROR(ValidateBackendOptions(options));
  if (weights == nullptr) return InvalidArgumentError("no model");
  std::unique_ptr<CpuSequenceBackend> b(new CpuSequenceBackend(std::move(weights), options));
  const MambaConfig& c = b->weights_->config;
  b->slots_.reserve(static_cast<size_t>(options.num_slots));
  for (int32_t i = 0; i < options.num_slots; ++i) b->slots_.push_back(cpu::MambaState::Zeros(c, 1, options.state_dtype));
  b->logits_.reserve(static_cast<size_t>(std::max(options.max_logit_rows, options.max_batch) * c.vocab_size));
  // Counted at the stored size (the reference holds floats rounded to the dtype; a real cache would
  // hold the narrower values), so budgets agree across devices.
  const uint64_t state_bytes = (b->slots_[0].conv.size() + b->slots_[0].ssm.size()) *
                               static_cast<uint64_t>(state::DtypeBytes(options.state_dtype));
  b->bytes_ = WeightBytes(*b->weights_) + state_bytes * static_cast<uint64_t>(options.num_slots) +
              b->logits_.capacity() * sizeof(float);
  return b;
}

Status CpuSequenceBackend::ResetSlot(int32_t slot) {
  MQ_RETURN_IF_ERROR(CheckSlot(*this, slot));
  auto& s = slots_[static_cast<size_t>(slot)];
  std::fill(s.conv.begin(), s.conv.end(), 0.0f);
  std::fill(s.ssm.begin(), s.ssm.end(), 0.0f);
  return OkStatus();
}

Status CpuSequenceBackend::CopySlot(int32_t src, int32_t dst) {
  MQ_RETURN_IF_ERROR(CheckSlot(*this, src));
  MQ_RETURN_IF_ERROR(CheckSlot(*this, dst));
  if (src != dst) {
    const auto& a = slots_[static_cast<size_t>(src)];
    auto& b = slots_[static_cast<size_t>(dst)];
    std::copy(a.conv.begin(), a.conv.end(), b.conv.begin());
    std::copy(a.ssm.begin(), a.ssm.end(), b.ssm.begin());
  }
  return OkStatus();
}

Status CpuSequenceBackend::Prefill(int32_t slot, const int32_t* ids, int64_t n, float* last_logits, float* all_logits) {
  MQ_RETURN_IF_ERROR(CheckPrefillArgs(*this, slot, ids, n, all_logits));
  const int64_t V = weights_->V();
  cpu::ForwardOptions fo;
  fo.last_logits_only = all_logits == nullptr;
  fo.skip_logits = all_logits == nullptr && last_logits == nullptr;
  MQ_RETURN_IF_ERROR(cpu::MambaForward(*weights_, ids, 1, n, &slots_[static_cast<size_t>(slot)], &logits_, fo));
  if (all_logits != nullptr) std::memcpy(all_logits, logits_.data(), static_cast<size_t>(n * V) * sizeof(float));
  if (last_logits != nullptr) {
    const float* last = logits_.data() + (all_logits != nullptr ? (n - 1) * V : 0);
    std::memcpy(last_logits, last, static_cast<size_t>(V) * sizeof(float));
  }
  return OkStatus();
}

Status CpuSequenceBackend::Decode(const int32_t* slots, const int32_t* ids, int64_t B, float* logits) {
  MQ_RETURN_IF_ERROR(CheckDecodeArgs(*this, slots, ids, B));
  const int64_t V = weights_->V();
  cpu::ForwardOptions fo;
  fo.last_logits_only = true;
  for (int64_t b = 0; b < B; ++b) {
    MQ_RETURN_IF_ERROR(cpu::MambaForward(*weights_, ids + b, 1, 1, &slots_[static_cast<size_t>(slots[b])], &logits_, fo));
    std::memcpy(logits + b * V, logits_.data(), static_cast<size_t>(V) * sizeof(float));
  }
  return OkStatus();
}

}  // namespace mq::serve
