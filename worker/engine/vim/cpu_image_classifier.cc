// The CPU ImageClassifier: VimModel behind the device-neutral interface.
#include "vim/image_classifier.h"
#include "vim/vim_model.h"

namespace mq {
namespace {

class CpuImageClassifier final : public ImageClassifier {
 public:
  explicit CpuImageClassifier(std::unique_ptr<VimModel> model) : model_(std::move(model)) {}
  const VimConfig& config() const override { return model_->config(); }
  bool quantized() const override { return model_->quantized(); }
  std::string device() const override { return "cpu"; }
  int64_t max_batch() const override { return VimModel::kMaxBatch; }
  Status Classify(const float* images, int64_t batch, float* logits) override {
    return model_->Classify(images, batch, logits);
  }

 private:
  std::unique_ptr<VimModel> model_;
};

}  // namespace

StatusOr<std::unique_ptr<ImageClassifier>> OpenCpuImageClassifier(const std::string& model_dir) {
  auto model = VimModel::Load(model_dir);
  if (!model.ok()) return model.status();
  return std::unique_ptr<ImageClassifier>(new CpuImageClassifier(std::move(*model)));
}

}  // namespace mq
