// The registry's checks of Vision Mamba artifacts, with the engine's own readers: a Vim model
// (config.json `model_type: vim`, no tokenizer) must load as the worker will load it, and an image
// dataset (a `.safetensors` file of normalized images, vim_image_set.h) must read as the
// quantization job and mqctl classify will read it. Refusals are INVALID_ARGUMENT.
#pragma once

#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mambaquant/v1/registry.pb.h"

namespace mq::server {

// config.json's model_type of a Vision Mamba image classifier (vim/vim_config.h): what the
// server routes Classify (and KServe pixel_values) to.
inline constexpr char kVimModelType[] = "vim";

// The path an image dataset's single file must end with (text datasets are anything else).
inline constexpr char kImageDatasetSuffix[] = ".safetensors";
bool IsImageDatasetPath(const std::string& path);

// `files`: artifact path → local blob path. True when config.json declares model_type "vim".
bool IsVimModel(const std::map<std::string, std::string>& files);
// Loads the model (float or quantized export) as the worker does; returns its model_type ("vim").
absl::StatusOr<std::string> CheckVimModelFiles(const std::map<std::string, std::string>& files);

// A job's dataset must suit its model: image sets for a Vim model, texts for a text model.
// INVALID_ARGUMENT naming the spec field (`field`: "spec.calib_dataset" or "spec.eval_dataset").
absl::Status CheckJobDataset(const mambaquant::v1::Artifact& model, const mambaquant::v1::Artifact& dataset,
                             const std::string& field);

// `blob_path`: the dataset file. Images F32 [B, C, H, W] (finite), optional labels I64 [B].
absl::Status CheckImageDataset(const std::string& blob_path);

}  // namespace mq::server
