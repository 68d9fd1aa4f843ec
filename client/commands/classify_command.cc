// mqctl classify: classes of the images of a safetensors file under a Vision Mamba model on the
// server (InferenceService.Classify), and the accuracy when the file has labels.

#include <algorithm>
#include <cstdio>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "classify_request.h"
#include "commands.h"
#include "grpc_status.h"
#include "inference_flags.h"
#include "interrupt_watcher.h"
#include "terminal_text.h"
#include "vim/vim_image_set.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

constexpr char kClassifyHelp[] =
    R"(usage: mqctl classify --model NAME[:VERSION] --images FILE.safetensors [--prefix P] [--top-k K] [--json]

Classifies the images of a safetensors file with a Vision Mamba model on the server: prints each
image's most likely class (label and probability), and the top-1 accuracy when the file holds
labels. The file is an image set as datasets use it: `images` F32 [B, C, H, W], already
normalized as the model expects, and optionally `labels` I64 [B]. Images go in calls of at most
1024 images and 6 MiB of pixels.

  --images FILE        the image set (read and checked here, by the engine's reader)
  --prefix P           read the tensors P + "images" and P + "labels" instead (e.g. test_ for
                       the vim-digits reference file)
  --top-k K            print the K (1..1000) most likely classes of each image (default 1)
  --json               one JSON object: model, count, per image its top classes (class, label,
                       probability, logit) and label, and the accuracy when labelled
  --timeout SECONDS    deadline of each call (default 60)
)";

}  // namespace

const char* ClassifyHelp() { return kClassifyHelp; }

int RunClassifyCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  std::set<std::string> allowed = {"model", "images", "prefix", "top-k"};
  allowed.insert(GlobalOptions().begin(), GlobalOptions().end());
  absl::Status s = args.AllowOnly(allowed);
  if (!s.ok()) return CommandUsageError("classify", std::string(s.message()));
  auto model = InferenceModelRef(args, words, "classify");
  if (!model.ok()) return CommandUsageError("classify", std::string(model.status().message()));
  auto top_k = OptionalInt(args, "top-k", 1, ClassifyLimits::kMaxTopK);
  if (!top_k.ok()) return CommandUsageError("classify", std::string(top_k.status().message()));
  if (!args.Has("images")) return CommandUsageError("classify", "--images FILE.safetensors is required");
  auto file = LoadImageSetFile(*args.Get("images"), args.Get("prefix").value_or(""));
  if (!file.ok()) return ReportError(absl::Status(static_cast<absl::StatusCode>(file.status().code()), file.status().message()));
  const ImageSet& set = file->set;
  const int64_t numel = file->in_chans * file->img_size * file->img_size;
  // Calls within the per-call limits (common/classify_request.h).
  const int64_t per_call = std::max<int64_t>(1, std::min(ClassifyLimits::kMaxImages, ClassifyLimits::kMaxPixelBytes / (4 * numel)));

  std::vector<ImageClassification> results;
  std::string served_by;
  for (int64_t first = 0; first < set.count; first += per_call) {
    const int64_t n = std::min(per_call, set.count - first);
    ClassifyRequest req;
    req.set_model(*model);
    for (int64_t d : {n, file->in_chans, file->img_size, file->img_size}) req.add_shape(d);
    req.set_packed(reinterpret_cast<const char*>(set.images.data() + first * numel), static_cast<size_t>(n * numel) * sizeof(float));
    if (*top_k) req.set_top_k(static_cast<int32_t>(**top_k));
    ClassifyResponse resp;
    grpc::ClientContext ctx;
    cli.Prepare(&ctx);
    InterruptWatcher interrupt([&ctx] { ctx.TryCancel(); });
    const grpc::Status status = cli.inference->Classify(&ctx, req, &resp);
    if (interrupt.interrupted()) {
      std::fprintf(stderr, "classify: cancelled (interrupt)\n");
      return kExitInterrupted;
    }
    if (!status.ok()) {
      ReportError(FromGrpcStatus(status));
      return kExitError;  // a server's INVALID_ARGUMENT is not a usage error of mqctl
    }
    if (resp.images_size() != n) {
      ReportError(absl::InternalError(absl::StrCat("the server answered ", resp.images_size(), " images for ", n)));
      return kExitError;
    }
    served_by = resp.model();
    for (auto& im : *resp.mutable_images()) results.push_back(std::move(im));
  }

  const bool labelled = !set.labels.empty();
  int64_t correct = 0;
  for (size_t i = 0; i < results.size(); ++i)
    if (labelled && results[i].top_size() > 0 && results[i].top(0).class_id() == set.labels[i]) ++correct;
  const double accuracy = labelled ? static_cast<double>(correct) / static_cast<double>(set.count) : 0.0;

  if (cli.json) {
    nlohmann::json out = {{"model", served_by}, {"count", set.count}};
    nlohmann::json images = nlohmann::json::array();
    for (size_t i = 0; i < results.size(); ++i) {
      nlohmann::json top = nlohmann::json::array();
      for (const auto& t : results[i].top())
        top.push_back({{"class", t.class_id()}, {"label", t.label()}, {"probability", t.probability()}, {"logit", t.logit()}});
      nlohmann::json image = {{"index", i}, {"top", top}};
      if (labelled) image["label"] = set.labels[i];
      images.push_back(image);
    }
    out["images"] = images;
    if (labelled) {
      out["correct"] = correct;
      out["accuracy"] = accuracy;
    }
    std::printf("%s\n", out.dump().c_str());
    return kExitOk;
  }
  std::printf("model     %s\n", SanitizeTerminalText(served_by, false).c_str());
  std::printf("%6s  %s%s\n", "image", "class (label, probability)", labelled ? "   true" : "");
  for (size_t i = 0; i < results.size(); ++i) {
    std::string line;
    for (int k = 0; k < results[i].top_size(); ++k) {
      const ClassScore& t = results[i].top(k);
      absl::StrAppend(&line, k ? ", " : "", t.class_id(), " (", SanitizeTerminalText(t.label(), false), ", ",
                      absl::StrFormat("%.4f", t.probability()), ")");
    }
    if (labelled) absl::StrAppend(&line, "   ", set.labels[i], results[i].top(0).class_id() == set.labels[i] ? "" : "  (wrong)");
    std::printf("%6zu  %s\n", i, line.c_str());
  }
  if (labelled)
    std::printf("accuracy  %.4f (%lld of %lld images)\n", accuracy, static_cast<long long>(correct), static_cast<long long>(set.count));
  return kExitOk;
}

}  // namespace mq::cli
