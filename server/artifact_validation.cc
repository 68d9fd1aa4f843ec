#include "artifact_validation.h"

#include <set>
#include <string_view>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "engine_model_check.h"
#include "name_validation.h"
#include "sha256.h"
#include "vim_artifact_check.h"

namespace mq::server {

using mambaquant::v1::Artifact;
using mambaquant::v1::ArtifactKind;

namespace {

constexpr size_t kMaxDescriptionBytes = 1024;
constexpr int kMaxLabels = 32;
constexpr size_t kMaxLabelBytes = 256;

const mambaquant::v1::FileEntry* FindFile(const Artifact& a, const std::string& path) {
  for (const auto& f : a.files()) {
    if (f.path() == path) return &f;
  }
  return nullptr;
}

}  // namespace

absl::Status ValidateUploadManifest(const mambaquant::v1::CreateUploadRequest& request, const UploadLimits& limits) {
  if (request.kind() != mambaquant::v1::ARTIFACT_KIND_MODEL && request.kind() != mambaquant::v1::ARTIFACT_KIND_DATASET) {
    return absl::InvalidArgumentError("kind must be MODEL or DATASET");
  }
  absl::Status s = ValidateName(request.name());
  if (!s.ok()) return s;
  if (request.version() < 0 || request.version() > kMaxVersion) {
    return absl::InvalidArgumentError(absl::StrCat("version must be 0 (next) or 1..", kMaxVersion));
  }
  if (request.description().size() > kMaxDescriptionBytes) {
    return absl::InvalidArgumentError(absl::StrCat("description is over ", kMaxDescriptionBytes, " bytes"));
  }
  if (request.labels_size() > kMaxLabels) return absl::InvalidArgumentError(absl::StrCat("more than ", kMaxLabels, " labels"));
  for (const auto& [key, value] : request.labels()) {
    s = ValidateName(key);
    if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat("label key: ", s.message()));
    if (value.size() > kMaxLabelBytes) return absl::InvalidArgumentError(absl::StrCat("label ", key, " is over ", kMaxLabelBytes, " bytes"));
  }
  const bool dataset = request.kind() == mambaquant::v1::ARTIFACT_KIND_DATASET;
  if (request.files_size() == 0) return absl::InvalidArgumentError("no files");
  if (dataset && request.files_size() != 1) return absl::InvalidArgumentError("a dataset is exactly one file");
  if (request.files_size() > limits.max_files) {
    return absl::InvalidArgumentError(absl::StrCat(request.files_size(), " files; at most ", limits.max_files));
  }
  std::set<std::string> paths;
  bool has_config = false, has_weights = false;
  for (const auto& f : request.files()) {
    s = ValidateFilePath(f.path());
    if (!s.ok()) return s;
    if (!paths.insert(f.path()).second) return absl::InvalidArgumentError(absl::StrCat("file ", f.path(), " is listed twice"));
    if (!IsSha256Hex(f.sha256())) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.path(), ": sha256 must be 64 lower-case hex characters"));
    }
    uint64_t limit = dataset ? limits.max_dataset_bytes : limits.max_file_bytes;
    if (f.size() > limit) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.path(), " is ", f.size(), " bytes; at most ", limit));
    }
    if (f.size() == 0 && f.sha256() != Sha256Hex("")) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.path(), " is empty but its sha256 is not that of empty content"));
    }
    has_config |= f.path() == "config.json";
    has_weights |= f.path() == "model.safetensors" || f.path() == "model.safetensors.index.json";
  }
  if (!dataset) {
    if (!has_config) return absl::InvalidArgumentError("a model needs config.json at its top level");
    // tokenizer.json: text models only (Vim image classifiers have none), checked at commit.
    if (!has_weights) {
      return absl::InvalidArgumentError(
          "a model needs model.safetensors, or model.safetensors.index.json with its shards, at its top level");
    }
  }
  return absl::OkStatus();
}

absl::Status ValidateModelContent(Artifact* artifact, const BlobStore& blobs, const UploadLimits& limits,
                                  const ModelContentHook& hook) {
  if (FindFile(*artifact, "config.json") == nullptr) return absl::InvalidArgumentError("a model needs config.json");
  // Only top-level files make up the model the engine loads (nested ones are carried along).
  std::map<std::string, std::string> files;
  for (const auto& f : artifact->files()) {
    if (f.path().find('/') == std::string::npos) files[f.path()] = blobs.BlobPath(f.sha256());
  }
  if (IsVimModel(files)) {
    auto vim = CheckVimModelFiles(files);
    if (!vim.ok()) return vim.status();
    artifact->set_model_type(*vim);
    return absl::OkStatus();
  }
  if (FindFile(*artifact, "tokenizer.json") == nullptr) return absl::InvalidArgumentError("a model needs tokenizer.json");
  absl::StatusOr<std::string> model_type = hook ? hook(files) : CheckModelFormat(files);
  if (!model_type.ok()) return model_type.status();
  artifact->set_model_type(*model_type);
  return absl::OkStatus();
}

absl::Status ValidateDatasetContent(const Artifact& artifact, const BlobStore& blobs, const UploadLimits& limits) {
  if (artifact.files_size() != 1) return absl::InvalidArgumentError("a dataset is exactly one file");
  const auto& f = artifact.files(0);
  if (f.size() == 0) return absl::InvalidArgumentError("the dataset is empty");
  if (f.size() > limits.max_dataset_bytes) return absl::InvalidArgumentError("the dataset is too large");
  if (IsImageDatasetPath(f.path())) return CheckImageDataset(blobs.BlobPath(f.sha256()));
  auto fd = blobs.OpenBlob(f.sha256());
  if (!fd.ok()) return fd.status();
  Utf8Validator utf8;
  std::vector<char> buf(1 << 20);
  uint64_t pos = 0;
  bool any_text = false;  // a byte other than ASCII whitespace
  while (pos < f.size()) {
    auto n = PreadFull(fd->get(), buf.data(), buf.size(), pos);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    if (!utf8.Feed(buf.data(), *n)) {
      return absl::InvalidArgumentError(
          absl::StrCat("the dataset is not UTF-8 text (bad byte at offset ", pos + utf8.error_index(), ")"));
    }
    for (size_t i = 0; i < *n && !any_text; ++i) any_text = std::string_view(" \t\n\r\v\f").find(buf[i]) == std::string_view::npos;
    pos += *n;
  }
  if (!utf8.Finish()) return absl::InvalidArgumentError("the dataset ends inside a UTF-8 sequence");
  // Whitespace only: accepted once, it failed every job later ("fewer tokens than one window").
  if (!any_text) return absl::InvalidArgumentError("the dataset has no text (only whitespace)");
  return absl::OkStatus();
}

bool Utf8Validator::Feed(const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    unsigned char c = static_cast<unsigned char>(data[i]);
    if (pending_ > 0) {
      if ((c & 0xC0) != 0x80) return error_index_ = i, false;
      codepoint_ = (codepoint_ << 6) | (c & 0x3F);
      if (--pending_ == 0) {
        // Overlong encodings, surrogates and values past U+10FFFF are invalid.
        if ((length_ == 2 && codepoint_ < 0x80) || (length_ == 3 && codepoint_ < 0x800) ||
            (length_ == 4 && codepoint_ < 0x10000) || codepoint_ > 0x10FFFF ||
            (codepoint_ >= 0xD800 && codepoint_ <= 0xDFFF)) {
          return error_index_ = i, false;
        }
      }
      continue;
    }
    if (c < 0x80) continue;
    if ((c & 0xE0) == 0xC0) { pending_ = 1; length_ = 2; codepoint_ = c & 0x1F; }
    else if ((c & 0xF0) == 0xE0) { pending_ = 2; length_ = 3; codepoint_ = c & 0x0F; }
    else if ((c & 0xF8) == 0xF0) { pending_ = 3; length_ = 4; codepoint_ = c & 0x07; }
    else return error_index_ = i, false;
  }
  return true;
}

}  // namespace mq::server
