// What makes an upload acceptable: the declared manifest (names, paths, sizes, digests, required
// files) when the upload starts, and the content (config.json, safetensors headers,
// tokenizer.json, dataset text) when it is committed. Every read is bounded.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "blob_store.h"
#include "mambaquant/v1/registry.pb.h"

namespace mq::server {

struct UploadLimits {
  uint64_t max_file_bytes = uint64_t{64} << 30;   // per file
  int max_files = 256;                            // per artifact
  uint64_t max_dataset_bytes = uint64_t{1} << 30; // a dataset's single file
  // The bounds of a model's files (config.json, tokenizer.json, safetensors headers) are the
  // model-format library's (worker/engine/format/limits.h), shared with the engine.
};

// The check of a model's content: receives the model's top-level files (artifact path → the
// blob's local path) and returns config.json's model_type, or INVALID_ARGUMENT naming the file
// and the problem. mq-server passes CheckModelWithEngine (engine_model_check.h); unset, the
// model-format library's check alone runs.
using ModelContentHook =
    std::function<absl::StatusOr<std::string>(const std::map<std::string, std::string>& files)>;

// INVALID_ARGUMENT naming the first problem of the declared upload.
absl::Status ValidateUploadManifest(const mambaquant::v1::CreateUploadRequest& request, const UploadLimits& limits);

// Checks the content of a complete model once, with the readers the engine loads it with
// (format/model_check.h: config.json, the safetensors index and headers, shapes against
// config.json, NaN/Inf weights, tokenizer.json's bounded structure), and fills
// artifact->model_type. INVALID_ARGUMENT naming the file and the problem. A Vision Mamba model
// (model_type "vim", no tokenizer.json) is loaded by the engine's VimModel instead.
absl::Status ValidateModelContent(mambaquant::v1::Artifact* artifact, const BlobStore& blobs,
                                  const UploadLimits& limits, const ModelContentHook& hook);

// A dataset is non-empty UTF-8 text, or (a file named *.safetensors) an image set: F32 images
// [B, C, H, W], finite, optional I64 labels [B] (vim_artifact_check.h).
absl::Status ValidateDatasetContent(const mambaquant::v1::Artifact& artifact, const BlobStore& blobs,
                                    const UploadLimits& limits);

// Streaming UTF-8 validation (exposed for tests). Feed chunks; Finish() fails on a truncated
// sequence at the end.
class Utf8Validator {
 public:
  bool Feed(const char* data, size_t n);
  bool Finish() const { return pending_ == 0; }
  // After Feed returned false: the index, in that Feed's data, of the byte that made it invalid.
  size_t error_index() const { return error_index_; }

 private:
  int pending_ = 0;       // continuation bytes still expected
  uint32_t codepoint_ = 0;
  int length_ = 0;        // length of the current sequence, for overlong checks
  size_t error_index_ = 0;
};

}  // namespace mq::server
