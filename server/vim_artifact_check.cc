#include "vim_artifact_check.h"

#include <unistd.h>

#include <filesystem>
#include <random>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "vim/vim_config.h"
#include "vim/vim_image_set.h"
#include "vim/vim_quantized_io.h"

namespace mq::server {

namespace fs = std::filesystem;

bool IsImageDatasetPath(const std::string& path) { return absl::EndsWith(path, kImageDatasetSuffix); }

bool IsVimModel(const std::map<std::string, std::string>& files) {
  auto config = files.find("config.json");
  return config != files.end() && IsVimConfigFile(config->second);
}

absl::StatusOr<std::string> CheckVimModelFiles(const std::map<std::string, std::string>& files) {
  // The engine loads a directory: one of links named as the artifact's files, to their blobs.
  std::error_code ec;
  const fs::path dir = fs::temp_directory_path(ec) /
                       absl::StrCat("mq-vim-check-", getpid(), "-", std::random_device{}());
  if (ec || !fs::create_directory(dir, ec)) return absl::InternalError(absl::StrCat("cannot create a directory to check the model in: ", ec.message()));
  for (const auto& [name, blob] : files) {
    fs::create_symlink(blob, dir / name, ec);
    if (ec) break;
  }
  absl::Status result = absl::OkStatus();
  if (ec) {
    result = absl::InternalError(absl::StrCat("cannot link the model's files to check them: ", ec.message()));
  } else {
    // The worker's loader (VimModel::Load) without the forward pass: mq-server links only readers.
    auto model = LoadVimModelWeights(dir.string());
    if (!model.ok()) {
      // The engine names the temporary directory; the uploader knows the files by their names.
      std::string message = model.status().message();
      for (size_t at; (at = message.find(dir.string() + "/")) != std::string::npos;) message.erase(at, dir.string().size() + 1);
      result = absl::InvalidArgumentError(message);
    }
  }
  fs::remove_all(dir, ec);
  if (!result.ok()) return result;
  return std::string(kVimModelType);
}

absl::Status CheckJobDataset(const mambaquant::v1::Artifact& model, const mambaquant::v1::Artifact& dataset,
                             const std::string& field) {
  const bool vim = model.model_type() == kVimModelType;
  const bool images = dataset.files_size() == 1 && IsImageDatasetPath(dataset.files(0).path());
  if (vim && !images)
    return absl::InvalidArgumentError(absl::StrCat(field, ": model ", model.name(), " is a Vision Mamba classifier; dataset ",
                                                   dataset.name(), " is text, not an image set (*.safetensors)"));
  if (!vim && images)
    return absl::InvalidArgumentError(absl::StrCat(field, ": dataset ", dataset.name(), " is an image set; model ", model.name(),
                                                   " is a text model"));
  return absl::OkStatus();
}

absl::Status CheckImageDataset(const std::string& blob_path) {
  auto summary = LoadImageSetFile(blob_path);
  if (!summary.ok()) {
    std::string message = summary.status().message();
    if (absl::StartsWith(message, blob_path)) message.replace(0, blob_path.size(), "the image dataset");
    return absl::InvalidArgumentError(message);
  }
  return absl::OkStatus();
}

}  // namespace mq::server
