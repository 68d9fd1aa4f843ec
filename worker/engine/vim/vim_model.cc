#include "vim/vim_model.h"

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "vim/vim_forward.h"
#include "vim/vim_quantized_io.h"

namespace mq {
namespace {

// Tokens per forward pass: bounds the activation buffers (≈ 40 Vim-tiny images) while keeping
// the GEMMs large enough to use every core.
constexpr int64_t kTokensPerPass = 8192;

}  // namespace

StatusOr<std::unique_ptr<VimModel>> VimModel::Load(const std::string& dir) {
  std::string qc;
  MQ_ASSIGN_OR_RETURN(VimWeights w, LoadVimModelWeights(dir, &qc));
  return FromWeights(std::move(w), std::move(qc));
}

std::unique_ptr<VimModel> VimModel::FromWeights(VimWeights weights, std::string quantization_config_json) {
  return std::unique_ptr<VimModel>(new VimModel(std::move(weights), std::move(quantization_config_json)));
}

Status VimModel::Classify(const float* images, int64_t batch, float* logits) const {
  if (batch < 1 || batch > kMaxBatch)
    return InvalidArgumentError("batch " + std::to_string(batch) + " is outside [1, " + std::to_string(kMaxBatch) + "]");
  if (images == nullptr || logits == nullptr) return InvalidArgumentError("images and logits must not be null");
  const int64_t per_image = config().image_numel();
  for (int64_t i = 0; i < batch * per_image; ++i)
    if (!std::isfinite(images[i]))
      return InvalidArgumentError("image " + std::to_string(i / per_image) + " holds NaN or Inf");
  const int64_t step = std::max<int64_t>(1, kTokensPerPass / config().seq_len());
  for (int64_t b0 = 0; b0 < batch; b0 += step) {
    const int64_t nb = std::min(step, batch - b0);
    MQ_RETURN_IF_ERROR(VimForward(weights_, images + b0 * per_image, nb, logits + b0 * config().num_classes));
  }
  return OkStatus();
}

}  // namespace mq
