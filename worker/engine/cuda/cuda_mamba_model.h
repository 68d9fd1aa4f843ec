// A Mamba-1 model on one GPU: FP16 weights/activations (float models) or INT8 linears with
// per-token INT8 activations (quantized models, scope `linear`, and scope `full`: fake-quantized
// conv input, INT8 h·C with per-(step, channel) h scales and online R4); float32 residual stream and
// recurrent state in both. Prefill and decode share one path (EnqueueForward); decoding runs from
// a CUDA graph per batch size with per-sequence state slots and greedy selection on the GPU.
//
// Per layer (T tokens):  residual add + RMSNorm (+INT8 quantize) → in_proj → conv+SiLU (+INT8)
//   → x_proj → δ|B|C split (+INT8 δ) → dt_proj → scan+gate → [R2 Hadamard + INT8] → out_proj.
// INT8 linears: cuBLASLt IMMA GEMM for many tokens, the engine's own GEMV for ≤ gemv_max_tokens,
// both producing exact int32 accumulators that the consumer dequantizes on read.
#pragma once

#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <memory>
#include <vector>

#include "cuda/cublaslt_gemm.h"
#include "cuda/cuda_handles.h"
#include "cuda/decode_persistent.h"
#include "cuda/device_buffer.h"
#include "cuda/kernel_params.h"
#include "eval/generation.h"
#include "model/activation_site.h"
#include "model/mamba_weights.h"
#include "quant/hadamard.h"
#include "util/status.h"

namespace mq::cuda {

// How decode steps of B ≤ layer_kernels_max_batch (at most 8) tokens run; larger batches take the
// per-stage kernels.
enum class DecodePath {
  kLayerKernels,  // four GEMV-centred kernels per layer (decode_kernels.cu), FP16, INT8 and W4A8
  kPerStage,      // the prefill kernels with T = B
  // One cooperative kernel for every layer of a step, weights streamed into shared memory ahead of
  // need (decode_persistent_kernel.cu), for B ≤ kPersistentMaxBatch; larger batches per stage.
  // Opt-in until measured faster than the layer kernels.
  kPersistent,
};

struct CudaModelOptions {
  int64_t max_tokens = 4096;       // B·L of one forward
  int64_t max_batch = 64;          // sequences of one forward / decode step
  int64_t num_slots = 64;          // recurrent-state slots (plus one scratch slot)
  int64_t max_logit_rows = 64;     // logits rows held on the device (kAll needs B·L)
  // Per-stage linears by token count (a decode step's batch, or B·L of a prefill):
  //   INT8: the own GEMV up to gemv_max_tokens (measured on the H100: it beats cuBLASLt at 2 tokens,
  //         4.32 vs 4.49 ms a 2.8b step, and loses from 4), then the skinny tensor-core GEMM
  //         (skinny_gemm.h) up to skinny_gemm_max_tokens, cuBLASLt IMMA above. Measured (H100, 2.8b
  //         per-stage decode, mq-bench --skinny-ab, docs/benchmarks.md): the skinny GEMM takes 8.4 %
  //         off the step at 8 tokens and 3.7 % at 16, but is slower from 32 (not profiled; its weight
  //         loads are 64-byte row segments, 8 rows an instruction): hence 16.
  //   W4A8: the int4 GEMV up to int4_gemv_max_tokens (it and unpack + cuBLASLt tie at 8 tokens,
  //         6.63 vs 6.57 ms), then the skinny GEMM on the packed rows up to
  //         int4_skinny_gemm_max_tokens — off: measured slower than unpack + cuBLASLt at every batch
  //         (8.58 vs 6.53 ms at 8 tokens; its loads are 32-byte row segments) — and above, the weights unpacked
  //         into a scratch buffer at every call (not kept: 1.5× the INT8 model's weight memory) for
  //         cuBLASLt.
  // 0 turns a kernel off (the A/B switches of mq-bench --skinny-ab).
  int64_t gemv_max_tokens = 2;
  int64_t skinny_gemm_max_tokens = 16;
  int64_t int4_gemv_max_tokens = 8;
  int64_t int4_skinny_gemm_max_tokens = 0;
  DecodePath decode_path = DecodePath::kLayerKernels;
  // Largest decode batch for the layer kernels (≤ 8; larger batches take the per-stage kernels);
  // 0: INT8 and W4A8 4, FP16 2, the crossovers measured on the H100 (docs/benchmarks.md).
  int64_t layer_kernels_max_batch = 0;
  bool decode_pdl = true;           // layer kernels: programmatic dependent launch
  bool decode_l2_prefetch = false;  // layer kernels: bulk L2 prefetch of weight slices (measured slower)
  // Decode: MB of later weights (out_proj, then the next in_proj or LM head) that the layer kernels'
  // x_proj and scan kernels (the per-stage path's conv and scan) bulk-prefetch into L2 while DRAM
  // idles under them; 0 off; −1: the environment's MQ_DECODE_L2_AHEAD_MB (an A/B switch for
  // benchmarks), else kDefaultDecodeL2AheadMb.
  int64_t decode_l2_ahead_mb = -1;
  // The same look-ahead in the per-stage path (its conv and scan step kernels) up to this many tokens.
  int64_t decode_l2_ahead_max_tokens = 64;
  size_t workspace_bytes = 32ull << 20;
  // Storage of the recurrent-state pool (model/state_dtype.h): fp32 exact; fp16/bf16/int8 are
  // narrower device buffers, rounded at every store. Decode then takes the per-stage kernels at
  // every batch (the layer kernels keep a float32 state).
  StateDtype state_dtype = StateDtype::kF32;
};

// One slot's recurrent state as stored on the device, copied to the host (tests): raw elements of
// the state dtype ([layers][E][K−1] and [layers][E][N]) and, for int8, the row scales [layers][E].
struct SlotStateHost {
  StateDtype dtype = StateDtype::kF32;
  std::vector<uint8_t> conv, ssm;
  std::vector<float> conv_scale, ssm_scale;
};

enum class LogitsMode { kAll, kLast, kNone };

// An activation of one forward as calibration sees it: [rows, cols], half (x) or float (xf, the
// C of the scan), rows `ld` apart, valid on the model's stream when the tap is called.
struct ActivationTapView {
  int64_t layer = 0;
  ActivationSite site = ActivationSite::kInProjInput;
  const __half* x = nullptr;
  const float* xf = nullptr;
  int64_t ld = 0, rows = 0, cols = 0;
  cudaStream_t stream = nullptr;
};
// Enqueues work on view.stream (it must not synchronize: forwards may be captured).
using ActivationTap = std::function<Status(const ActivationTapView&)>;

// Shapes and options of a randomly initialized model (benchmarks).
struct RandomModelSpec {
  MambaConfig config;
  bool int8 = false;
  int weight_bits = 8;          // with int8: 4 → W4A8, packed 4-bit weights (cuda/int4_kernels.h)
  bool online_hadamard = true;  // INT8: R2 before out_proj, as MambaQuant serves it
  uint64_t seed = 1;
};

class CudaMambaModel {
 public:
  static StatusOr<std::unique_ptr<CudaMambaModel>> Create(const MambaWeights& w, const CudaModelOptions& options);
  static StatusOr<std::unique_ptr<CudaMambaModel>> CreateRandom(const RandomModelSpec& spec,
                                                                const CudaModelOptions& options);
  ~CudaMambaModel();
  CudaMambaModel(const CudaMambaModel&) = delete;
  CudaMambaModel& operator=(const CudaMambaModel&) = delete;

  const MambaConfig& config() const { return config_; }
  const CudaModelOptions& options() const { return options_; }
  bool int8() const { return int8_; }  // INT8 activations (W8A8, or W4A8 when int4())
  bool int4() const { return int4_; }  // W4A8: packed 4-bit weights (int4 GEMV, packed layer kernels)
  // A w4a8 model with some layers at 8-bit weights (int4() and INT8 layers both).
  bool mixed_width() const { return int4_ && int8_layers_; }
  cudaStream_t stream() const { return stream_.get(); }
  // Bytes of parameters one decode step reads (linears, their scales, the LM head, conv, A, D, …).
  int64_t decode_weight_bytes() const { return decode_weight_bytes_; }

  // Zeroes the recurrent state of the given slots (host list), on the model's stream.
  Status ResetSlots(const std::vector<int32_t>& slots);
  // Copies the conv and SSM state of slot `src` into slot `dst` (device to device, on the model's
  // stream; slots 0..num_slots, the scratch slot included). For serving: n > 1 completions of one
  // prompt share its prefill (CudaSequenceBackend::CopySlot).
  Status CopySlot(int32_t src, int32_t dst);
  // Copies slot `slot`'s stored state to the host (synchronizes the model's stream).
  StatusOr<SlotStateHost> ReadSlotState(int32_t slot) const;
  // Enqueues one forward of B sequences of L tokens: ids_dev [B·L] and slots_dev [B] on the device.
  // Logits land in logits_dev(): [B·L, V] (kAll) or [B, V] (kLast).
  Status EnqueueForward(const int32_t* ids_dev, const int32_t* slots_dev, int64_t B, int64_t L, LogitsMode mode);
  const float* logits_dev() const { return logits_.get(); }
  int32_t* ids_buffer() const { return ids_.get(); }      // [max_tokens] staging for EnqueueForward
  int32_t* slots_buffer() const { return slots_.get(); }  // [max_batch]

  // Host convenience: copies ids/slots in, runs, synchronizes and copies the logits out.
  Status Forward(const std::vector<int32_t>& ids, const std::vector<int32_t>& slots, int64_t B, int64_t L,
                 LogitsMode mode, std::vector<float>* logits);

  // Generation like mq::Generate (equal-length prompts, eos/pad rules, greedy or sampled), all on the
  // GPU: prompts in slots 0..B−1, decode steps replayed from a CUDA graph when use_graph.
  StatusOr<std::vector<std::vector<int32_t>>> Generate(const std::vector<std::vector<int32_t>>& prompts,
                                                       const GenerationOptions& options, bool use_graph);

  // Decode steps for benchmarks: input ids are decode_ids() [B], slots decode_slots() [B];
  // each step writes the greedy next ids back into decode_ids().
  Status PrepareDecode(int64_t B, bool use_graph);  // warms up and captures the graph for B
  Status DecodeStep(int64_t B, bool use_graph);
  // One decode step's logits without token selection (serving, CudaSequenceBackend): reads ids
  // decode_ids() [B] and slots decode_slots() [B], leaves [B, V] in logits_dev(), through the same
  // path as DecodeStep (layer kernels for small B, else per-stage). Enqueue only: capturable.
  Status EnqueueDecodeLogits(int64_t B);
  // Whether a decode step of B tokens runs the layer kernels (else the per-stage kernels).
  bool DecodesWithLayerKernels(int64_t B) const { return UseLayerKernels(B); }
  // Whether a decode step of B tokens runs the persistent kernel (DecodePath::kPersistent).
  bool DecodesWithPersistentKernel(int64_t B) const { return UsePersistent(B); }
  // Persistent kernel: blocks of its grid (0: one per SM; tests use fewer to exercise the tiling).
  // Resets its barrier counter (whose epochs assume one grid size); drops captured graphs.
  Status SetPersistentGrid(int grid);
  int32_t* decode_ids() const { return dec_ids_.get(); }
  int32_t* decode_slots() const { return dec_slots_.get(); }
  Status ResetDecodeCounters();  // step counter, finished flags
  // Calibration (FP16 models only): EnqueueForward hands the input of every layer linear to `tap`
  // (kInProjInput, kXProjInput, kDtProjInput, kOutProjInput) and the scan's C (kSsmC, float)
  // right after the kernel producing it. An empty tap turns it off.
  Status SetActivationTap(ActivationTap tap);
  // Calibration (FP16 models, prefill): the scan records max|h| per state index over every step and
  // channel of every forward, per layer; `on` zeroes the record. StateAbsMax: [layers, N].
  Status ObserveStateAbsMax(bool on);
  StatusOr<std::vector<float>> StateAbsMax() const;
  // Per-stage GPU time of eager forwards (events between stages; for profiling, not for graphs).
  void EnableStageTiming(bool on) {
    timing_ = on;
    stage_names_.clear();
    if (on) stage_ms_.clear();
  }
  Status CollectStageTimes();  // synchronizes; accumulates into stage_ms()
  const std::vector<std::pair<std::string, double>>& stage_ms() const { return stage_ms_; }
  // Decode path and launch options for B ≤ 8 (see CudaModelOptions); drops captured graphs.
  void SetDecodePath(DecodePath path, bool pdl = true, bool l2_prefetch = false, int64_t layer_kernels_max_batch = 0) {
    options_.decode_path = path;
    options_.layer_kernels_max_batch = layer_kernels_max_batch;
    options_.decode_pdl = pdl;
    options_.decode_l2_prefetch = l2_prefetch;
    graphs_.clear();
  }
  // INT8: use the engine's GEMV up to this many tokens (0: cuBLASLt always). Drops captured graphs.
  void SetGemvMaxTokens(int64_t tokens) {
    options_.gemv_max_tokens = tokens;
    graphs_.clear();
  }
  // Decode: MB of L2 look-ahead (CudaModelOptions::decode_l2_ahead_mb). Drops graphs.
  void SetDecodeL2AheadMb(int64_t mb) {
    options_.decode_l2_ahead_mb = mb;
    SetDecodeL2Ahead();
    graphs_.clear();
  }
  // The skinny GEMM up to this many tokens above the GEMVs' (≤ 64; 0: off), INT8 and W4A8 linears.
  // Drops captured graphs.
  void SetSkinnyGemmMaxTokens(int64_t int8_tokens, int64_t int4_tokens) {
    options_.skinny_gemm_max_tokens = int8_tokens;
    options_.int4_skinny_gemm_max_tokens = int4_tokens;
    graphs_.clear();
  }
  // W4A8: use the int4 GEMV up to this many tokens (0: unpack + cuBLASLt always). Drops graphs.
  void SetInt4GemvMaxTokens(int64_t tokens) {
    options_.int4_gemv_max_tokens = tokens;
    graphs_.clear();
  }

 private:
  struct Linear;
  struct Layer;
  struct Buffers;
  CudaMambaModel() = default;
  Status Init(const MambaConfig& config, bool int8, const CudaModelOptions& options);
  Status AllocateActivations();
  static Status UploadHadamard(Layer* L, const quant::RandomHadamard& had);
  Status RunLinear(const Linear& lin, const void* x, int64_t ldx, int64_t tokens, void* out, int64_t ldc,
                   bool out_f32);
  Status EnqueueDecodeStep(int64_t B);
  GreedyParams NextTokenParams(int64_t B) const;  // selection kernel parameters for a decode batch
  Status Mark(const char* stage);
  Status Tap(int64_t layer, ActivationSite site, const void* x, bool f32, int64_t ld, int64_t rows, int64_t cols);
  Status PrepareLayerKernels();
  bool UseLayerKernels(int64_t B) const;
  void SetDecodeL2Ahead();     // each layer's decode L2Spans (options_.decode_l2_ahead_mb)
  Status PreparePersistent();  // the device layer table and work buffers of DecodePath::kPersistent
  bool UsePersistent(int64_t B) const;
  int64_t LayerKernelsMaxBatch() const;  // the option, or the default of this weight format

  MambaConfig config_;
  CudaModelOptions options_;
  bool int8_ = false;
  bool int4_ = false;          // some layer's linears are packed 4-bit
  bool int8_layers_ = false;   // some layer's linears are 8-bit (with int4_: mixed widths)
  DeviceBuffer<int8_t> int4_unpacked_;  // W4A8: one linear's weights unpacked for cuBLASLt
  bool full_scope_ = false;  // some layer quantizes its conv input or h·C, or rotates h (per-stage decode)
  int64_t d_ = 0, E_ = 0, N_ = 0, R_ = 0, K_ = 0, V_ = 0, layers_ = 0;
  int64_t dp_ = 0, Ep_ = 0, Rp_ = 0;  // padded to 16
  int64_t decode_weight_bytes_ = 0;

  CudaStream stream_;
  std::unique_ptr<CublasLtGemm> gemm_;
  std::vector<Layer> layer_;
  DeviceBuffer<float> embeddings_;  // [V, d] float32
  DeviceBuffer<float> norm_f_;      // [d]
  DeviceBuffer<__half> lm_head_;    // [V, dp]
  DeviceBuffer<float> conv_state_;  // [slots + 1][layers][E][K−1]
  DeviceBuffer<float> ssm_state_;   // [slots + 1][layers][E][N]
  // With a narrower state dtype the pools above stay empty and the state lives here, in the same
  // layout ([slots + 1][layers][E][·] elements of the dtype; int8 row scales [slots + 1][layers][E]).
  DeviceBuffer<uint8_t> conv_state_q_, ssm_state_q_;
  DeviceBuffer<float> conv_scale_, ssm_scale_;
  // Layer li's block of slot 0 in whichever pool holds the state.
  void* ConvStateLayer(int64_t li) const;
  void* SsmStateLayer(int64_t li) const;
  std::unique_ptr<Buffers> buf_;
  DeviceBuffer<float> logits_;
  DeviceBuffer<int32_t> ids_, slots_;
  // Decode loop state on the device.
  DeviceBuffer<int32_t> dec_ids_, dec_slots_, finished_, out_tokens_, step_;
  int64_t max_decode_steps_ = 4096;
  SamplingOptions sampling_;  // next-token selection of the decode loop (greedy by default)
  std::map<int64_t, CudaGraphExec> graphs_;
  // Layer-kernel decode: per-layer parameters (B, slots and launch flags set per step) and the
  // [8, ·] float buffers between the kernels.
  std::vector<DecodeLayerParams> dec_layer_;
  DecodeLmHeadParams dec_head_;
  DeviceBuffer<float> dec_xz_, dec_u_, dec_dbc_, dec_y_;
  DeviceBuffer<unsigned int> dec_umax_;
  DeviceBuffer<int8_t> dec_yq_;
  DeviceBuffer<float> dec_ys_;
  // Persistent decode: parameters (B set per step), the per-layer table on the device, x_proj's
  // split-K sums and the grid barrier counter (both zero between steps).
  DecodePersistentParams dec_persist_;
  DeviceBuffer<uint8_t> dec_persist_layers_;
  DeviceBuffer<int32_t> dec_xacc_;
  DeviceBuffer<unsigned long long> dec_barrier_;
  ActivationTap tap_;
  DeviceBuffer<float> state_absmax_;  // [layers, N] while ObserveStateAbsMax is on
  bool timing_ = false;
  std::vector<CudaEvent> events_;
  std::vector<std::string> stage_names_;
  std::vector<std::pair<std::string, double>> stage_ms_;
};

}  // namespace mq::cuda
