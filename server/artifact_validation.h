// What makes an upload acceptable: the declared manifest (names, paths, sizes, digests, required
// files) when the upload starts, and the content (config.json, safetensors headers,
// tokenizer.json, dataset text) when it is committed. Every read is bounded.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include "absl/status/status.h"
#include "blob_store.h"
#include "mambaquant/v1/registry.pb.h"

namespace mq::server {

struct UploadLimits {
  uint64_t max_file_bytes = uint64_t{64} << 30;   // per file
  int max_files = 256;                            // per artifact
  uint64_t max_dataset_bytes = uint64_t{1} << 30; // a dataset's single file
  uint64_t max_json_bytes = uint64_t{64} << 20;   // config.json, tokenizer.json
  uint64_t max_safetensors_header_bytes = uint64_t{100} << 20;
};

// Hook for a deeper model check (e.g. the engine's loaders opening the model): receives a map
// from artifact path to the blob's local path. Unset: structural checks only.
using ModelContentHook = std::function<absl::Status(const std::map<std::string, std::string>& files)>;

// INVALID_ARGUMENT naming the first problem of the declared upload.
absl::Status ValidateUploadManifest(const mambaquant::v1::CreateUploadRequest& request, const UploadLimits& limits);

// Checks the content of a complete model and fills artifact->model_type. INVALID_ARGUMENT when
// config.json is not a JSON object with a string "model_type", a safetensors header is
// malformed, or tokenizer.json is not JSON.
absl::Status ValidateModelContent(mambaquant::v1::Artifact* artifact, const BlobStore& blobs,
                                  const UploadLimits& limits, const ModelContentHook& hook);

// A dataset is non-empty UTF-8 text.
absl::Status ValidateDatasetContent(const mambaquant::v1::Artifact& artifact, const BlobStore& blobs,
                                    const UploadLimits& limits);

// Streaming UTF-8 validation (exposed for tests). Feed chunks; Finish() fails on a truncated
// sequence at the end.
class Utf8Validator {
 public:
  bool Feed(const char* data, size_t n);
  bool Finish() const { return pending_ == 0; }

 private:
  int pending_ = 0;       // continuation bytes still expected
  uint32_t codepoint_ = 0;
  int length_ = 0;        // length of the current sequence, for overlong checks
};

}  // namespace mq::server
