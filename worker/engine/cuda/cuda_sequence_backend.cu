#include "cuda/cuda_sequence_backend.h"

#include <cstring>
#include <string>
#include <utility>

#include "cuda/cuda_check.h"
#include "cuda/device_buffer.h"
#include "model/model_loader.h"

namespace mq::cuda {
namespace {

std::string MiB(uint64_t bytes) { return std::to_string((bytes + (1u << 19)) >> 20) + " MiB"; }

// The state pool alone: (slots + 1) × layers × E × (K − 1 + N) values of the state dtype (int8:
// plus two float scales a row).
uint64_t StatePoolBytes(const MambaConfig& c, int64_t num_slots, StateDtype dtype) {
  const uint64_t rows = static_cast<uint64_t>(num_slots + 1) * static_cast<uint64_t>(c.num_hidden_layers) *
                        static_cast<uint64_t>(c.intermediate_size);
  return rows * (static_cast<uint64_t>(c.conv_kernel - 1 + c.state_size) * static_cast<uint64_t>(state::DtypeBytes(dtype)) +
                 (state::HasScale(dtype) ? 8u : 0u));
}

}  // namespace

StatusOr<std::unique_ptr<CudaSequenceBackend>> CudaSequenceBackend::Open(const std::string& model_dir,
                                                                         const serve::SequenceBackendOptions& options) {
  MQ_RETURN_IF_ERROR(serve::ValidateBackendOptions(options));
  MQ_ASSIGN_OR_RETURN(LoadedModel loaded, LoadModel(model_dir));
  auto backend = Create(loaded.weights, options);
  if (!backend.ok()) return backend.status().WithContext("loading " + model_dir + " onto the GPU");
  return backend;
}

StatusOr<std::unique_ptr<CudaSequenceBackend>> CudaSequenceBackend::Create(const MambaWeights& weights,
                                                                           const serve::SequenceBackendOptions& options) {
  MQ_RETURN_IF_ERROR(serve::ValidateBackendOptions(options));
  size_t free_before = 0, total = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaMemGetInfo(&free_before, &total));
  const int64_t counted_before = DeviceMemoryStats::current().load();
  std::unique_ptr<CudaSequenceBackend> b(new CudaSequenceBackend());
  b->config_ = weights.config;
  b->options_ = options;
  Status s = b->Init(weights);
  const int64_t allocated = DeviceMemoryStats::current().load() - counted_before;
  if (!s.ok()) {
    b.reset();           // frees what was allocated
    cudaGetLastError();  // a failed cudaMalloc is also the thread's last error: later launch checks must not see it
    if (s.code() == StatusCode::kResourceExhausted) {
      s = ResourceExhaustedError(s.message() + " (" + MiB(static_cast<uint64_t>(std::max<int64_t>(allocated, 0))) +
                                 " were allocated before the failure, " + MiB(free_before) + " of " + MiB(total) +
                                 " were free; the state pool of " + std::to_string(options.num_slots) + " slots alone takes " +
                                 MiB(StatePoolBytes(weights.config, options.num_slots, options.state_dtype)) +
                                 ": lower the slots, the batch or the prefill chunk)");
    }
    return s;
  }
  b->bytes_ = static_cast<uint64_t>(std::max<int64_t>(allocated, 0));
  return std::move(b);
}

Status CudaSequenceBackend::Init(const MambaWeights& weights) {
  MQ_ASSIGN_OR_RETURN(model_, CudaMambaModel::Create(weights, ServingModelOptions(options_)));
  const size_t V = static_cast<size_t>(config_.vocab_size);
  const size_t id_rows = static_cast<size_t>(std::max(options_.max_prefill_tokens, options_.max_batch));
  void* p = nullptr;
  MQ_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, id_rows * sizeof(int32_t), cudaHostAllocDefault));
  ids_host_.reset(static_cast<int32_t*>(p));
  MQ_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, static_cast<size_t>(options_.max_batch) * sizeof(int32_t), cudaHostAllocDefault));
  slots_host_.reset(static_cast<int32_t*>(p));
  MQ_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, static_cast<size_t>(options_.max_batch) * V * sizeof(float), cudaHostAllocDefault));
  logits_host_.reset(static_cast<float*>(p));
  MQ_CUDA_RETURN_IF_ERROR(cudaHostAlloc(&p, static_cast<size_t>(options_.max_batch) * sizeof(int32_t), cudaHostAllocDefault));
  next_host_.reset(static_cast<int32_t*>(p));
  MQ_ASSIGN_OR_RETURN(next_dev_, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(options_.max_batch)));
  return CaptureDecodeGraphs();
}

// One graph per bucket. Each bucket first runs one eager step (all rows on the scratch slot) so
// that cuBLASLt's plans for its shape and the kernels' attributes exist before the capture (a
// capture may not allocate); then the same step is captured. The scratch slot is zeroed at the end.
Status CudaSequenceBackend::CaptureDecodeGraphs() {
  cudaStream_t st = model_->stream();
  buckets_ = DecodeBuckets(options_.max_batch);
  graphs_.clear();
  for (int64_t bucket : buckets_) {
    std::fill_n(slots_host_.get(), bucket, scratch_slot());
    std::fill_n(ids_host_.get(), bucket, 0);
    MQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(model_->decode_ids(), ids_host_.get(), bucket * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    MQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(model_->decode_slots(), slots_host_.get(), bucket * sizeof(int32_t), cudaMemcpyHostToDevice, st));
    MQ_RETURN_IF_ERROR(model_->EnqueueDecodeLogits(bucket));
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
    cudaGraph_t graph = nullptr;
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    const Status s = model_->EnqueueDecodeLogits(bucket);
    const cudaError_t end = cudaStreamEndCapture(st, &graph);
    if (!s.ok()) {
      if (graph != nullptr) cudaGraphDestroy(graph);
      return s;
    }
    MQ_CUDA_RETURN_IF_ERROR(end);
    MQ_ASSIGN_OR_RETURN(CudaGraphExec exec, CudaGraphExec::Instantiate(graph));
    graphs_.push_back(std::move(exec));
  }
  MQ_RETURN_IF_ERROR(model_->ResetSlots({scratch_slot()}));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  return OkStatus();
}

CudaSequenceBackend::~CudaSequenceBackend() {
  // Nothing may still read the pinned buffers when they are freed.
  if (model_ != nullptr) cudaStreamSynchronize(model_->stream());
  graphs_.clear();
}

Status CudaSequenceBackend::ResetSlot(int32_t slot) {
  MQ_RETURN_IF_ERROR(serve::CheckSlot(*this, slot));
  return model_->ResetSlots({slot});
}

Status CudaSequenceBackend::CopySlot(int32_t src, int32_t dst) {
  MQ_RETURN_IF_ERROR(serve::CheckSlot(*this, src));
  MQ_RETURN_IF_ERROR(serve::CheckSlot(*this, dst));
  return model_->CopySlot(src, dst);
}

Status CudaSequenceBackend::Prefill(int32_t slot, const int32_t* ids, int64_t n, float* last_logits, float* all_logits) {
  MQ_RETURN_IF_ERROR(serve::CheckPrefillArgs(*this, slot, ids, n, all_logits));
  cudaStream_t st = model_->stream();
  const int64_t V = config_.vocab_size;
  std::copy_n(ids, n, ids_host_.get());
  slots_host_.get()[0] = slot;
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->ids_buffer(), ids_host_.get(), n * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->slots_buffer(), slots_host_.get(), sizeof(int32_t), cudaMemcpyHostToDevice, st));
  const LogitsMode mode = all_logits != nullptr ? LogitsMode::kAll : last_logits != nullptr ? LogitsMode::kLast
                                                                                             : LogitsMode::kNone;
  MQ_RETURN_IF_ERROR(model_->EnqueueForward(model_->ids_buffer(), model_->slots_buffer(), 1, n, mode));
  if (all_logits != nullptr) {
    // Straight into the caller's buffer (up to max_logit_rows rows: Score, not the hot path).
    MQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(all_logits, model_->logits_dev(), n * V * sizeof(float), cudaMemcpyDeviceToHost, st));
  } else if (last_logits != nullptr) {
    MQ_CUDA_RETURN_IF_ERROR(
        cudaMemcpyAsync(logits_host_.get(), model_->logits_dev(), V * sizeof(float), cudaMemcpyDeviceToHost, st));
  }
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  if (last_logits != nullptr) {
    const float* src = all_logits != nullptr ? all_logits + (n - 1) * V : logits_host_.get();
    std::memcpy(last_logits, src, static_cast<size_t>(V) * sizeof(float));
  }
  return OkStatus();
}

Status CudaSequenceBackend::PrefillBatch(const int32_t* slots, const int32_t* ids, int64_t B, int64_t n,
                                         float* last_logits) {
  MQ_RETURN_IF_ERROR(serve::CheckPrefillBatchArgs(*this, slots, ids, B, n, last_logits));
  cudaStream_t st = model_->stream();
  const int64_t V = config_.vocab_size;
  std::copy_n(ids, B * n, ids_host_.get());  // B·n ≤ max_prefill_tokens: the staging buffer holds it
  std::copy_n(slots, B, slots_host_.get());
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->ids_buffer(), ids_host_.get(), B * n * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->slots_buffer(), slots_host_.get(), B * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  MQ_RETURN_IF_ERROR(model_->EnqueueForward(model_->ids_buffer(), model_->slots_buffer(), B, n, LogitsMode::kLast));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(logits_host_.get(), model_->logits_dev(), B * V * sizeof(float), cudaMemcpyDeviceToHost, st));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  std::memcpy(last_logits, logits_host_.get(), static_cast<size_t>(B * V) * sizeof(float));
  return OkStatus();
}

Status CudaSequenceBackend::LaunchDecode(const int32_t* slots, const int32_t* ids, int64_t B) {
  const int64_t bucket = DecodeBucket(B, options_.max_batch);
  const auto it = std::lower_bound(buckets_.begin(), buckets_.end(), bucket);
  if (it == buckets_.end() || *it != bucket) return InternalError("no decode graph for batch " + std::to_string(bucket));
  const CudaGraphExec& graph = graphs_[static_cast<size_t>(it - buckets_.begin())];
  cudaStream_t st = model_->stream();
  PadDecodeRows(slots, ids, B, bucket, scratch_slot(), 0, slots_host_.get(), ids_host_.get());
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->decode_ids(), ids_host_.get(), bucket * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(model_->decode_slots(), slots_host_.get(), bucket * sizeof(int32_t), cudaMemcpyHostToDevice, st));
  return graph.Launch(st);
}

Status CudaSequenceBackend::Decode(const int32_t* slots, const int32_t* ids, int64_t B, float* logits) {
  MQ_RETURN_IF_ERROR(serve::CheckDecodeArgs(*this, slots, ids, B));
  if (logits == nullptr) return InvalidArgumentError("decode needs a logits buffer");
  cudaStream_t st = model_->stream();
  const int64_t V = config_.vocab_size;
  MQ_RETURN_IF_ERROR(LaunchDecode(slots, ids, B));
  MQ_CUDA_RETURN_IF_ERROR(
      cudaMemcpyAsync(logits_host_.get(), model_->logits_dev(), B * V * sizeof(float), cudaMemcpyDeviceToHost, st));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  if (logits != logits_host_.get()) std::memcpy(logits, logits_host_.get(), static_cast<size_t>(B * V) * sizeof(float));
  return OkStatus();
}

Status CudaSequenceBackend::DecodeGreedy(const int32_t* slots, const int32_t* ids, int64_t B, int32_t* next) {
  MQ_RETURN_IF_ERROR(serve::CheckDecodeArgs(*this, slots, ids, B));
  if (next == nullptr) return InvalidArgumentError("greedy decode needs an output buffer");
  cudaStream_t st = model_->stream();
  MQ_RETURN_IF_ERROR(LaunchDecode(slots, ids, B));
  MQ_RETURN_IF_ERROR(LaunchRowArgmax(model_->logits_dev(), B, config_.vocab_size, next_dev_.get(), st));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(next_host_.get(), next_dev_.get(), B * sizeof(int32_t), cudaMemcpyDeviceToHost, st));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  std::copy_n(next_host_.get(), B, next);
  return OkStatus();
}

}  // namespace mq::cuda
