// mq-engine classify: top-1 classes of a Vim model (float or quantized) on a safetensors file of
// normalized images, and the accuracy when the file carries labels.
#include <algorithm>
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cpu/parallel_for.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#include "vim/image_classifier.h"
#include "vim/vim_image_set.h"
#include "vim/vim_metrics.h"
#include "vim/vim_model.h"
#if defined(MQ_HAVE_CUDA)
#include "cuda/cuda_vim_classifier.h"
#endif

namespace mq::tools {
namespace {

// The classifier of --device: the CPU reference, or the CUDA one (the backend plugin's code,
// linked into mq-engine as generate links the sequence backend).
StatusOr<std::unique_ptr<ImageClassifier>> OpenClassifier(const std::string& device, const std::string& dir,
                                                          int64_t max_batch, bool fp16) {
  if (device == "cpu") {
    if (fp16) return InvalidArgumentError("--fp16 applies to --device cuda only");
    return OpenCpuImageClassifier(dir);
  }
#if defined(MQ_HAVE_CUDA)
  cuda::CudaVimOptions o;
  o.max_batch = max_batch;
  o.fp16 = fp16;
  return cuda::OpenCudaVimClassifier(dir, o);
#else
  (void)max_batch;
  return UnavailableError("this build has no CUDA backend (built without a CUDA toolkit)");
#endif
}

}  // namespace

int RunClassifyCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json", "fp16"}, {"model", "images", "prefix", "device", "threads", "batch"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto images_path = cl->Require("images");
  auto threads = cl->GetInt("threads", 0, 1, 4096);
  // Images a CUDA Classify call takes (device scratch is sized for it); larger sets go in chunks.
  auto batch = cl->GetInt("batch", 256, 1, VimModel::kMaxBatch);
  for (const Status& s : {model_dir.status(), images_path.status(), threads.status(), batch.status()})
    if (!s.ok()) return ReportError(s);
  const std::string device = cl->Get("device").value_or("cpu");
  if (device != "cpu" && device != "cuda")
    return ReportError(InvalidArgumentError("--device must be cpu or cuda, got \"" + device + "\""));
  if (*threads > 0) cpu::SetCpuThreads(static_cast<int>(*threads));
  const std::string prefix = cl->Get("prefix").value_or("");

  auto model = OpenClassifier(device, *model_dir, *batch, cl->Has("fp16"));
  if (!model.ok()) return ReportError(model.status());
  const VimConfig& c = (*model)->config();
  auto set = LoadImageSet(*images_path, c, prefix);
  if (!set.ok()) return ReportError(set.status());
  std::vector<float> logits(static_cast<size_t>(set->count * c.num_classes));
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t i0 = 0; i0 < set->count; i0 += (*model)->max_batch()) {
    const int64_t n = std::min((*model)->max_batch(), set->count - i0);
    if (Status s = (*model)->Classify(set->images.data() + i0 * c.image_numel(), n, logits.data() + i0 * c.num_classes);
        !s.ok())
      return ReportError(s);
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<int64_t> top = TopClasses(logits, c.num_classes);
  const bool labelled = !set->labels.empty();
  const double accuracy = labelled ? Accuracy(top, set->labels) : 0.0;

  if (cl->Has("json")) {
    nlohmann::json j = {{"model", *model_dir},          {"images", *images_path},
                        {"count", set->count},          {"num_classes", c.num_classes},
                        {"quantized", (*model)->quantized()}, {"device", device},
                        {"top1", top},                  {"seconds", seconds},
                        {"images_per_second", seconds > 0 ? static_cast<double>(set->count) / seconds : 0.0}};
    if (labelled) {
      j["labels"] = set->labels;
      j["accuracy"] = accuracy;
    }
    std::printf("%s\n", j.dump().c_str());
  } else {
    for (int64_t i = 0; i < set->count; ++i) {
      if (labelled) {
        std::printf("%lld\t%lld\t(label %lld)\n", static_cast<long long>(i), static_cast<long long>(top[i]),
                    static_cast<long long>(set->labels[i]));
      } else {
        std::printf("%lld\t%lld\n", static_cast<long long>(i), static_cast<long long>(top[i]));
      }
    }
    if (labelled) std::printf("accuracy %.4f (%lld images)\n", accuracy, static_cast<long long>(set->count));
    std::printf("time %.3f s (%.1f images/s, %s)\n", seconds, seconds > 0 ? static_cast<double>(set->count) / seconds : 0.0,
                device.c_str());
  }
  return 0;
}

}  // namespace mq::tools
