// mq-bench: prefill and decode benchmarks of the CUDA backend on the Mamba-1 family's shapes
// (random weights generated on the device) and on model directories (fixtures, quantized exports).
//
//   mq-bench [--shapes 130m,370m,790m,1.4b,2.8b] [--modes fp16,int8,w4a8] [--decode-batches 1,8,64]
//            [--prefill 1x2048,8x2048] [--model DIR ...] [--json FILE] [--compare-paths] [--skinny-ab]
//            [--ahead-ab MB,MB...]
//            [--state-dtype fp32|fp16|bf16|int8]
//
// Prints one line per measurement and writes them as JSON lines (--json). Times are CUDA-event
// medians after warm-up; decode steps replay a captured CUDA graph (embedding → layers → LM head
// → greedy argmax), so ms/token includes selecting the token on the GPU.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_handles.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/device_buffer.h"
#include "model/model_loader.h"
#include "model/model_shapes.h"

namespace mq::cuda {
namespace {

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, sep);)
    if (!item.empty()) out.push_back(item);
  return out;
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

FILE* g_json = nullptr;
void Emit(const std::string& model, const std::string& mode, const std::string& metric, double value,
          const std::string& unit, const std::string& extra = "") {
  std::printf("%-12s %-5s %-28s %12.4f %s %s\n", model.c_str(), mode.c_str(), metric.c_str(), value, unit.c_str(),
              extra.c_str());
  std::fflush(stdout);
  if (g_json != nullptr) {
    std::fprintf(g_json, "{\"model\":\"%s\",\"mode\":\"%s\",\"metric\":\"%s\",\"value\":%.6g,\"unit\":\"%s\"}\n",
                 model.c_str(), mode.c_str(), metric.c_str(), value, unit.c_str());
    std::fflush(g_json);
  }
}

#define BENCH_CHECK(expr)                                                              \
  do {                                                                                 \
    const ::mq::Status s_ = (expr);                                                    \
    if (!s_.ok()) {                                                                    \
      std::fprintf(stderr, "mq-bench: %s failed: %s\n", #expr, s_.ToString().c_str()); \
      return s_;                                                                       \
    }                                                                                  \
  } while (0)

// Device-to-device copy bandwidth, counting bytes read plus bytes written.
StatusOr<double> CopyBandwidth() {
  const size_t bytes = 1ull << 31;
  MQ_ASSIGN_OR_RETURN(auto a, DeviceBuffer<uint8_t>::Allocate(bytes));
  MQ_ASSIGN_OR_RETURN(auto b, DeviceBuffer<uint8_t>::Allocate(bytes));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemset(a.get(), 1, bytes));
  MQ_ASSIGN_OR_RETURN(auto e0, CudaEvent::Create());
  MQ_ASSIGN_OR_RETURN(auto e1, CudaEvent::Create());
  std::vector<double> t;
  for (int i = 0; i < 12; ++i) {
    MQ_RETURN_IF_ERROR(e0.Record(nullptr));
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(b.get(), a.get(), bytes, cudaMemcpyDeviceToDevice, nullptr));
    MQ_RETURN_IF_ERROR(e1.Record(nullptr));
    MQ_ASSIGN_OR_RETURN(float ms, ElapsedMs(e0, e1));
    if (i >= 2) t.push_back(ms);
  }
  return 2.0 * bytes / (Median(t) * 1e-3);
}

struct BenchOptions {
  std::vector<std::pair<int64_t, int64_t>> prefill = {{1, 2048}, {8, 2048}};
  std::vector<int64_t> decode_batches = {1, 8, 64};
  bool compare_paths = false;
  bool skinny_ab = false;  // INT8/W4A8 per-stage decode rows again with the skinny GEMM switched
  std::vector<int64_t> ahead_mbs;  // decode rows again at each L2 look-ahead budget (MB; 0 = off)
  double copy_bw = 0;
};

Status RandomIds(CudaMambaModel& m, int32_t* dst, int64_t n, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::vector<int32_t> ids(static_cast<size_t>(n));
  for (auto& x : ids) x = static_cast<int32_t>(2 + g() % static_cast<uint64_t>(m.config().vocab_size - 2));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(dst, ids.data(), ids.size() * 4, cudaMemcpyHostToDevice));
  return OkStatus();
}

Status RunPrefill(CudaMambaModel& m, const std::string& name, const std::string& mode, int64_t B, int64_t L) {
  if (B * L > m.options().max_tokens) return OkStatus();
  std::vector<int32_t> slots(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
  MQ_RETURN_IF_ERROR(RandomIds(m, m.ids_buffer(), B * L, 7 + B));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(m.slots_buffer(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice));
  MQ_ASSIGN_OR_RETURN(auto e0, CudaEvent::Create());
  MQ_ASSIGN_OR_RETURN(auto e1, CudaEvent::Create());
  std::vector<double> t;
  const int reps = B * L >= 8192 ? 4 : 6;
  for (int i = 0; i < reps; ++i) {
    MQ_RETURN_IF_ERROR(m.ResetSlots(slots));
    MQ_RETURN_IF_ERROR(e0.Record(m.stream()));
    MQ_RETURN_IF_ERROR(m.EnqueueForward(m.ids_buffer(), m.slots_buffer(), B, L, LogitsMode::kLast));
    MQ_RETURN_IF_ERROR(e1.Record(m.stream()));
    MQ_ASSIGN_OR_RETURN(float ms, ElapsedMs(e0, e1));
    if (i > 0) t.push_back(ms);
  }
  const double ms = Median(t);
  Emit(name, mode, "prefill_" + std::to_string(B) + "x" + std::to_string(L) + "_tok_per_s", B * L / (ms * 1e-3),
       "tok/s", "(" + std::to_string(ms) + " ms)");
  return OkStatus();
}

Status RunDecode(CudaMambaModel& m, const std::string& name, const std::string& mode, int64_t B,
                 const std::string& suffix = "") {
  if (B > m.options().max_batch) return OkStatus();
  std::vector<int32_t> slots(static_cast<size_t>(B));
  for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpy(m.decode_slots(), slots.data(), slots.size() * 4, cudaMemcpyHostToDevice));
  MQ_RETURN_IF_ERROR(m.ResetSlots(slots));
  MQ_RETURN_IF_ERROR(RandomIds(m, m.decode_ids(), B, 11 + B));
  MQ_RETURN_IF_ERROR(m.PrepareDecode(B, true));
  MQ_RETURN_IF_ERROR(m.ResetDecodeCounters());
  MQ_ASSIGN_OR_RETURN(auto e0, CudaEvent::Create());
  MQ_ASSIGN_OR_RETURN(auto e1, CudaEvent::Create());
  constexpr int kSteps = 64;
  for (int i = 0; i < 8; ++i) MQ_RETURN_IF_ERROR(m.DecodeStep(B, true));  // warm-up
  std::vector<double> t;
  for (int rep = 0; rep < 5; ++rep) {
    MQ_RETURN_IF_ERROR(e0.Record(m.stream()));
    for (int i = 0; i < kSteps; ++i) MQ_RETURN_IF_ERROR(m.DecodeStep(B, true));
    MQ_RETURN_IF_ERROR(e1.Record(m.stream()));
    MQ_ASSIGN_OR_RETURN(float ms, ElapsedMs(e0, e1));
    t.push_back(ms / kSteps);
  }
  Emit(name, mode, "decode_b" + std::to_string(B) + suffix + "_ms_per_step", Median(t), "ms");
  return OkStatus();
}

Status BenchModel(CudaMambaModel& m, const std::string& name, const BenchOptions& o) {
  std::string mode = m.int4() ? "w4a8" : m.int8() ? "int8" : "fp16";
  // A narrower state cache (--state-dtype) is its own row: e.g. "int8+state-int8".
  if (m.options().state_dtype != StateDtype::kF32) mode += std::string("+state-") + StateDtypeName(m.options().state_dtype);
  for (const auto& [B, L] : o.prefill) BENCH_CHECK(RunPrefill(m, name, mode, B, L));
  for (int64_t B : o.decode_batches) BENCH_CHECK(RunDecode(m, name, mode, B));
  if (o.skinny_ab && m.int8()) {
    // The batches whose linears run per stage with the other choice of the skinny GEMM (on where
    // the default is off, off where it is on), in the same process: "_skinny" / "_noskinny" rows.
    const int64_t s8 = m.options().skinny_gemm_max_tokens, s4 = m.options().int4_skinny_gemm_max_tokens;
    const bool on = (m.int4() ? s4 : s8) > 0;
    m.SetSkinnyGemmMaxTokens(on ? 0 : 64, on ? 0 : 64);
    for (int64_t B : o.decode_batches)
      if (!m.DecodesWithLayerKernels(B)) BENCH_CHECK(RunDecode(m, name, mode, B, on ? "_noskinny" : "_skinny"));
    m.SetSkinnyGemmMaxTokens(s8, s4);
  }
  if (!o.ahead_mbs.empty()) {
    // The decode rows at each L2 look-ahead budget, in the same process and graphs rebuilt per
    // budget: "_ahead<MB>" rows (CudaModelOptions::decode_l2_ahead_mb).
    for (int64_t B : o.decode_batches)
      for (int64_t mb : o.ahead_mbs) {
        m.SetDecodeL2AheadMb(mb);
        BENCH_CHECK(RunDecode(m, name, mode, B, "_ahead" + std::to_string(mb)));
      }
    m.SetDecodeL2AheadMb(-1);
  }
  if (o.compare_paths) {
    // The same decode steps through the other paths and launch options (B ≤ 8; the persistent
    // kernel B ≤ 4), then the INT8 GEMV choices of the per-stage path.
    for (int64_t B : o.decode_batches) {
      if (B > kDecodeMaxBatch) continue;
      m.SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
      BENCH_CHECK(RunDecode(m, name, mode, B, "_layer"));
      m.SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/false, /*l2_prefetch=*/false, kDecodeMaxBatch);
      BENCH_CHECK(RunDecode(m, name, mode, B, "_nopdl"));
      m.SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/true, /*l2_prefetch=*/true, kDecodeMaxBatch);
      BENCH_CHECK(RunDecode(m, name, mode, B, "_l2prefetch"));
      m.SetDecodePath(DecodePath::kPerStage);
      BENCH_CHECK(RunDecode(m, name, mode, B, "_perstage"));
      // The persistent kernel (opt-in, B ≤ 4, fp32 state): one cooperative launch per step. Not yet
      // measured, so a failure is reported and the other paths still run.
      m.SetDecodePath(DecodePath::kPersistent);
      if (m.DecodesWithPersistentKernel(B)) {
        const Status ps = RunDecode(m, name, mode, B, "_persistent");
        if (!ps.ok())
          std::fprintf(stderr, "mq-bench: persistent decode B=%lld: %s\n", static_cast<long long>(B), ps.ToString().c_str());
      }
    }
    // The GEMV choices below are the layer kernels' and per-stage path's (a run once left the
    // persistent path selected here, so its "_cublaslt" rows timed the persistent kernel).
    m.SetDecodePath(DecodePath::kLayerKernels, /*pdl=*/true, /*l2_prefetch=*/false, kDecodeMaxBatch);
    if (m.int4()) {
      // W4A8 decodes per stage; its linears: int4 GEMV (default up to int4_gemv_max_tokens), or
      // unpack + cuBLASLt for every batch, or the int4 GEMV for every batch.
      const int64_t int4_default = m.options().int4_gemv_max_tokens;
      m.SetInt4GemvMaxTokens(0);
      for (int64_t B : o.decode_batches) BENCH_CHECK(RunDecode(m, name, mode, B, "_unpack_cublaslt"));
      m.SetInt4GemvMaxTokens(m.options().max_batch);
      for (int64_t B : o.decode_batches)
        if (B > int4_default) BENCH_CHECK(RunDecode(m, name, mode, B, "_gemv"));
      m.SetInt4GemvMaxTokens(int4_default);
    } else if (m.int8()) {
      const int64_t gemv_default = m.options().gemv_max_tokens;
      const int64_t s8 = m.options().skinny_gemm_max_tokens, s4 = m.options().int4_skinny_gemm_max_tokens;
      m.SetGemvMaxTokens(0);  // cuBLASLt for every INT8 linear (the skinny GEMM off too)
      m.SetSkinnyGemmMaxTokens(0, s4);
      for (int64_t B : o.decode_batches)
        if (B <= kDecodeMaxBatch) BENCH_CHECK(RunDecode(m, name, mode, B, "_cublaslt"));
      m.SetSkinnyGemmMaxTokens(s8, s4);
      m.SetGemvMaxTokens(m.options().max_batch);  // own GEMV for every decode batch
      for (int64_t B : o.decode_batches)
        if (B > kDecodeMaxBatch) BENCH_CHECK(RunDecode(m, name, mode, B, "_gemv"));
      m.SetGemvMaxTokens(gemv_default);
    }
    m.SetDecodePath(DecodePath::kLayerKernels);
  }
  if (std::getenv("MQ_STAGE_TIMING") != nullptr && !o.prefill.empty()) {
    // Where prefill time goes: events between the stages of one eager forward (B×L of the last
    // prefill shape), summed over layers.
    const auto [B, L] = o.prefill.back();
    std::vector<int32_t> slots(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) slots[b] = static_cast<int32_t>(b);
    BENCH_CHECK(m.ResetSlots(slots));
    m.EnableStageTiming(true);
    BENCH_CHECK(m.EnqueueForward(m.ids_buffer(), m.slots_buffer(), B, L, LogitsMode::kLast));
    BENCH_CHECK(m.CollectStageTimes());
    m.EnableStageTiming(false);
    std::string line;
    for (const auto& [stage, ms] : m.stage_ms()) line += " " + stage + "=" + std::to_string(ms).substr(0, 6);
    std::printf("%-12s %-5s stages of prefill %lldx%lld (ms):%s\n", name.c_str(), mode.c_str(),
                static_cast<long long>(B), static_cast<long long>(L), line.c_str());
  }
  MQ_CUDA_RETURN_IF_ERROR(cudaDeviceSynchronize());
  Emit(name, mode, "weight_bytes_per_step", static_cast<double>(m.decode_weight_bytes()) / 1e9, "GB");
  Emit(name, mode, "roofline_decode_ms", m.decode_weight_bytes() / o.copy_bw * 1e3, "ms");
  Emit(name, mode, "peak_gpu_memory", static_cast<double>(DeviceMemoryStats::peak().load()) / 1e9, "GB");
  return OkStatus();
}

int Main(int argc, char** argv) {
  std::vector<std::string> shapes = {"130m", "370m", "790m", "1.4b", "2.8b"};
  std::vector<std::string> modes = {"fp16", "int8"};  // w4a8 on request (--modes fp16,int8,w4a8)
  std::vector<std::string> model_dirs;
  BenchOptions o;
  StateDtype state_dtype = StateDtype::kF32;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string { return i + 1 < argc ? argv[++i] : ""; };
    if (a == "--shapes") shapes = Split(next(), ',');
    else if (a == "--modes") modes = Split(next(), ',');
    else if (a == "--model") model_dirs.push_back(next());
    else if (a == "--compare-paths") o.compare_paths = true;
    else if (a == "--skinny-ab") o.skinny_ab = true;
    else if (a == "--ahead-ab") {
      for (const auto& v : Split(next(), ',')) {
        char* end = nullptr;
        const long long mb = std::strtoll(v.c_str(), &end, 10);
        if (v.empty() || *end != '\0' || mb < 0 || mb > 1024) {
          std::fprintf(stderr, "mq-bench: --ahead-ab takes MB values in [0, 1024], got %s\n", v.c_str());
          return 2;
        }
        o.ahead_mbs.push_back(mb);
      }
    }
    else if (a == "--state-dtype") {
      auto d = ParseStateDtype(next());
      if (!d.ok()) {
        std::fprintf(stderr, "mq-bench: %s\n", d.status().ToString().c_str());
        return 2;
      }
      state_dtype = *d;
    }
    else if (a == "--json") g_json = std::fopen(next().c_str(), "w");
    else if (a == "--decode-batches") {
      o.decode_batches.clear();
      for (const auto& s : Split(next(), ',')) o.decode_batches.push_back(std::stoll(s));
    } else if (a == "--prefill") {
      o.prefill.clear();
      for (const auto& s : Split(next(), ',')) {
        const auto x = s.find('x');
        o.prefill.emplace_back(std::stoll(s.substr(0, x)), std::stoll(s.substr(x + 1)));
      }
    } else {
      std::fprintf(stderr, "usage: mq-bench [--shapes a,b] [--modes fp16,int8,w4a8] [--model DIR]... [--json FILE]\n"
                           "                [--decode-batches 1,8,64] [--prefill 1x2048,8x2048] [--compare-paths] [--skinny-ab]\n"
                           "                [--ahead-ab MB,MB...] [--state-dtype fp32|fp16|bf16|int8]\n");
      return 2;
    }
  }
  if (!DeviceAvailable()) {
    std::fprintf(stderr, "mq-bench: no CUDA device\n");
    return 1;
  }
  cudaDeviceProp prop{};
  cudaGetDeviceProperties(&prop, 0);
  std::printf("device: %s, %d SMs, %.0f MB L2\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize / 1e6);
  auto bw = CopyBandwidth();
  if (!bw.ok()) {
    std::fprintf(stderr, "mq-bench: %s\n", bw.status().ToString().c_str());
    return 1;
  }
  o.copy_bw = *bw;
  Emit("device", "-", "copy_bandwidth", *bw / 1e12, "TB/s");

  int64_t max_prefill = 1;
  for (const auto& [B, L] : o.prefill) max_prefill = std::max(max_prefill, B * L);
  int64_t max_batch = 1;
  for (int64_t B : o.decode_batches) max_batch = std::max(max_batch, B);
  for (const auto& [B, L] : o.prefill) max_batch = std::max(max_batch, B);
  CudaModelOptions mo;
  mo.max_tokens = std::max(max_prefill, max_batch);  // decode above the layer-kernel batch runs as a forward
  mo.max_batch = max_batch;
  mo.num_slots = max_batch;
  mo.max_logit_rows = max_batch;
  mo.state_dtype = state_dtype;
  int failures = 0;
  for (const std::string& dir : model_dirs) {
    auto loaded = LoadModel(dir);
    if (!loaded.ok()) {
      std::fprintf(stderr, "mq-bench: %s: %s\n", dir.c_str(), loaded.status().ToString().c_str());
      ++failures;
      continue;
    }
    DeviceMemoryStats::ResetPeak();
    auto m = CudaMambaModel::Create(loaded->weights, mo);
    if (!m.ok() || !BenchModel(**m, std::filesystem::path(dir).filename().string(), o).ok()) ++failures;
  }
  for (const std::string& sname : shapes) {
    auto shape_config = ModelShapeConfig(sname);
    if (!shape_config.ok()) {
      std::fprintf(stderr, "mq-bench: unknown shape %s\n", sname.c_str());
      return 2;
    }
    for (const std::string& mode : modes) {
      RandomModelSpec spec;
      spec.config = *shape_config;
      spec.int8 = mode == "int8" || mode == "w4a8";
      spec.weight_bits = mode == "w4a8" ? 4 : 8;
      DeviceMemoryStats::ResetPeak();
      auto m = CudaMambaModel::CreateRandom(spec, mo);
      if (!m.ok()) {
        std::fprintf(stderr, "mq-bench: %s %s: %s\n", sname.c_str(), mode.c_str(), m.status().ToString().c_str());
        ++failures;
        continue;
      }
      if (!BenchModel(**m, sname, o).ok()) ++failures;
    }
  }
  if (g_json != nullptr) std::fclose(g_json);
  return failures == 0 ? 0 : 1;
}

}  // namespace
}  // namespace mq::cuda

int main(int argc, char** argv) { return mq::cuda::Main(argc, argv); }
