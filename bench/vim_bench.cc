// mq-vim-bench: images/s of the CUDA Vim classifier (cuda/cuda_vim_classifier.h) by linear mode
// (FP32, FP16, INT8) and batch size, on a Vim directory (`mq-engine make-model --shape vim-tiny`).
// INT8 quantizes the model first on the CPU (MambaQuant W8A8 per-token, online R2 Hadamard, on
// seeded random calibration images: timing only, accuracy is not the point here).
// A call is what a worker's Classify is: host images in, the H2D copy, the forward, the logits
// copied back, synchronized. Prints a table; --json writes the rows. MQ_STAGE_TIMING=1 adds GPU
// milliseconds per stage per call (events between stages) under each row.
//   mq-vim-bench --model DIR [--batches 1,64,256] [--modes fp32,fp16,int8] [--seconds 2] [--json F]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cuda/cuda_check.h"
#include "cuda/cuda_vim_classifier.h"
#include "cuda/device_buffer.h"
#include "vim/vim_model.h"
#include "vim/vim_quantizer.h"

namespace {

using namespace mq;

struct Args {
  std::string model, json;
  std::vector<int64_t> batches = {1, 64, 256};
  std::vector<std::string> modes = {"fp32", "fp16", "int8"};
  double seconds = 2.0;
  int64_t calib = 16;
};

std::vector<std::string> Split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  for (std::string item; std::getline(ss, item, ',');)
    if (!item.empty()) out.push_back(item);
  return out;
}

bool Parse(int argc, char** argv, Args* a, std::string* err) {
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    if (i + 1 >= argc) {
      *err = "missing value for " + k;
      return false;
    }
    const std::string v = argv[++i];
    if (k == "--model") {
      a->model = v;
    } else if (k == "--json") {
      a->json = v;
    } else if (k == "--batches") {
      a->batches.clear();
      for (const std::string& b : Split(v)) {
        const long long n = std::atoll(b.c_str());
        if (n < 1 || n > cuda::CudaVimOptions::kMaxBatch) {
          *err = "batch sizes must be in [1, " + std::to_string(cuda::CudaVimOptions::kMaxBatch) + "]: " + b;
          return false;
        }
        a->batches.push_back(n);
      }
    } else if (k == "--modes") {
      a->modes = Split(v);
      for (const std::string& m : a->modes)
        if (m != "fp32" && m != "fp16" && m != "int8") {
          *err = "modes are fp32, fp16 and int8: " + m;
          return false;
        }
    } else if (k == "--seconds") {
      a->seconds = std::atof(v.c_str());
      if (!(a->seconds > 0 && a->seconds <= 600)) {
        *err = "--seconds must be in (0, 600]";
        return false;
      }
    } else if (k == "--calib") {
      a->calib = std::atoll(v.c_str());
      if (a->calib < 1 || a->calib > 1024) {
        *err = "--calib must be in [1, 1024]";
        return false;
      }
    } else {
      *err = "unknown flag " + k;
      return false;
    }
  }
  if (a->model.empty() || a->batches.empty() || a->modes.empty()) {
    *err = "usage: mq-vim-bench --model DIR [--batches 1,64,256] [--modes fp32,fp16,int8] [--seconds 2] [--json F]";
    return false;
  }
  return true;
}

std::vector<float> RandomImages(int64_t count, int64_t numel, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(count * numel));
  for (float& v : x) v = n(rng);
  return x;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  std::string err;
  if (!Parse(argc, argv, &a, &err)) {
    std::fprintf(stderr, "%s\n", err.c_str());
    return 2;
  }
  auto model = VimModel::Load(a.model);
  if (!model.ok()) {
    std::fprintf(stderr, "%s\n", model.status().ToString().c_str());
    return 1;
  }
  const VimWeights& w = (*model)->weights();
  const VimConfig& c = w.config;
  const int64_t max_batch = *std::max_element(a.batches.begin(), a.batches.end());
  const std::vector<float> images = RandomImages(max_batch, c.image_numel(), 1);
  std::printf("Vim: img %lld, patch %lld, D %lld, depth %lld, L %lld, classes %lld\n", static_cast<long long>(c.img_size),
              static_cast<long long>(c.patch_size), static_cast<long long>(c.embed_dim), static_cast<long long>(c.depth),
              static_cast<long long>(c.seq_len()), static_cast<long long>(c.num_classes));

  nlohmann::json rows = nlohmann::json::array();
  std::printf("%-6s %7s %12s %12s %12s\n", "mode", "batch", "ms/call", "images/s", "GPU MiB");
  for (const std::string& mode : a.modes) {
    VimWeights weights;
    if (mode == "int8") {
      VimQuantizeOptions qo;  // mambaquant w8a8 per-token
      ImageSet calib;
      calib.count = a.calib;
      calib.images = RandomImages(a.calib, c.image_numel(), 2);
      const auto t0 = std::chrono::steady_clock::now();
      auto q = BuildQuantizedVim(qo, w, calib);
      if (!q.ok()) {
        std::fprintf(stderr, "int8: %s\n", q.status().ToString().c_str());
        return 1;
      }
      std::fprintf(stderr, "int8: quantized on the CPU in %.1f s\n",
                   std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
      weights = std::move(q->model);
    } else {
      weights = w;
    }
    cuda::CudaVimOptions o;
    o.max_batch = max_batch;
    o.fp16 = mode == "fp16";
    const char* timing_env = std::getenv("MQ_STAGE_TIMING");
    o.stage_timing = timing_env != nullptr && std::string(timing_env) == "1";
    cuda::DeviceMemoryStats::ResetPeak();
    auto cl = cuda::CreateCudaVimClassifier(weights, o);
    if (!cl.ok()) {
      std::fprintf(stderr, "%s: %s\n", mode.c_str(), cl.status().ToString().c_str());
      return 1;
    }
    std::vector<float> logits(static_cast<size_t>(max_batch * c.num_classes));
    for (int64_t b : a.batches) {
      Status s = (*cl)->Classify(images.data(), b, logits.data());  // warm-up: cuBLAS plans, clocks
      if (s.ok()) s = (*cl)->Classify(images.data(), b, logits.data());
      if (!s.ok()) {
        std::fprintf(stderr, "%s batch %lld: %s\n", mode.c_str(), static_cast<long long>(b), s.ToString().c_str());
        return 1;
      }
      const auto before = cuda::CudaVimStageTimes(**cl);
      int64_t calls = 0;
      const auto t0 = std::chrono::steady_clock::now();
      double elapsed = 0;
      while (calls < 3 || elapsed < a.seconds) {
        if (Status st = (*cl)->Classify(images.data(), b, logits.data()); !st.ok()) {
          std::fprintf(stderr, "%s\n", st.ToString().c_str());
          return 1;
        }
        ++calls;
        elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      }
      const double ms = 1e3 * elapsed / static_cast<double>(calls);
      const double ips = static_cast<double>(b * calls) / elapsed;
      const double mib = static_cast<double>(cuda::DeviceMemoryStats::peak().load()) / (1 << 20);
      std::printf("%-6s %7lld %12.3f %12.1f %12.0f\n", mode.c_str(), static_cast<long long>(b), ms, ips, mib);
      if (o.stage_timing) {
        std::string line = "  stages ms/call:";
        for (const auto& [name, total] : cuda::CudaVimStageTimes(**cl)) {
          double prev = 0;
          for (const auto& [n0, t0ms] : before)
            if (n0 == name) prev = t0ms;
          char buf[64];
          std::snprintf(buf, sizeof buf, " %s %.3f", name.c_str(), (total - prev) / static_cast<double>(calls));
          line += buf;
        }
        std::printf("%s\n", line.c_str());
      }
      std::fflush(stdout);
      rows.push_back({{"mode", mode}, {"batch", b}, {"ms_per_call", ms}, {"images_per_second", ips},
                      {"calls", calls}, {"peak_gpu_mib", mib}});
    }
  }
  if (!a.json.empty()) {
    std::ofstream out(a.json);
    out << nlohmann::json{{"model", a.model}, {"depth", c.depth}, {"embed_dim", c.embed_dim}, {"rows", rows}}.dump(1)
        << "\n";
  }
  return 0;
}
