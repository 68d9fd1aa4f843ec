// mq-engine classify: top-1 classes of a Vim model (float or quantized) on a safetensors file of
// normalized images, and the accuracy when the file carries labels.
#include <chrono>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "cpu/parallel_for.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#include "vim/vim_image_set.h"
#include "vim/vim_metrics.h"
#include "vim/vim_model.h"

namespace mq::tools {

int RunClassifyCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"}, {"model", "images", "prefix", "device", "threads"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto images_path = cl->Require("images");
  auto threads = cl->GetInt("threads", 0, 1, 4096);
  for (const Status& s : {model_dir.status(), images_path.status(), threads.status()})
    if (!s.ok()) return ReportError(s);
  const std::string device = cl->Get("device").value_or("cpu");
  if (device == "cuda") return ReportError(UnimplementedError("classify --device cuda: the CUDA Vim path is not built yet"));
  if (device != "cpu") return ReportError(InvalidArgumentError("--device must be cpu or cuda, got \"" + device + "\""));
  if (*threads > 0) cpu::SetCpuThreads(static_cast<int>(*threads));
  const std::string prefix = cl->Get("prefix").value_or("");

  auto model = VimModel::Load(*model_dir);
  if (!model.ok()) return ReportError(model.status());
  const VimConfig& c = (*model)->config();
  auto set = LoadImageSet(*images_path, c, prefix);
  if (!set.ok()) return ReportError(set.status());
  std::vector<float> logits(static_cast<size_t>(set->count * c.num_classes));
  const auto t0 = std::chrono::steady_clock::now();
  if (Status s = (*model)->Classify(set->images.data(), set->count, logits.data()); !s.ok()) return ReportError(s);
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
