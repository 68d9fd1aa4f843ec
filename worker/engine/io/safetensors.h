// Reader for the safetensors format (https://huggingface.co/docs/safetensors), single file and
// sharded (model.safetensors.index.json). Files are untrusted: every length, offset and shape is
// checked before use and every failure is a Status naming the file and the tensor.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "format/limits.h"
#include "io/dtype.h"
#include "io/mapped_file.h"
#include "util/status.h"

namespace mq {

// A tensor inside a mapped file. `data` points into the mapping and stays valid while the
// SafetensorsFile that produced it is alive. It may be unaligned: read with memcpy.
struct TensorView {
  std::string name;
  DType dtype = DType::kF32;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  std::string file;  // the file it lives in, for error messages

  int64_t numel() const;
};

// Converts any floating or integer tensor to float32 (I64 values beyond 2^24 lose precision).
std::vector<float> ToFloat32(const TensorView& t);
// Integer tensors (I8, I32, I64) widened to int64.
StatusOr<std::vector<int64_t>> ToInt64(const TensorView& t);

class SafetensorsFile {
 public:
  // Refuses headers over this many bytes (the format's own reference reader uses 100 MB).
  static constexpr uint64_t kMaxHeaderBytes = format::kMaxSafetensorsHeaderBytes;

  static StatusOr<std::unique_ptr<SafetensorsFile>> Open(const std::string& path);

  const std::string& path() const { return file_->path(); }
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const TensorView* Find(const std::string& name) const;

 private:
  explicit SafetensorsFile(std::unique_ptr<MappedFile> file) : file_(std::move(file)) {}
  Status Parse();

  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a model directory: `model.safetensors.index.json` with its shards when present,
// otherwise the single `model.safetensors`. With an index, every tensor it names must be in the
// shard it names and every tensor of a shard must be in the index.
class SafetensorsModel {
 public:
  static StatusOr<SafetensorsModel> OpenDirectory(const std::string& dir);
  // The same, for files that are not in one directory (the server's blobs): `local_path_of`
  // maps a file name of the model ("model.safetensors", a shard) to the path to read, or
  // nullopt when the model has no such file.
  using FileResolver = std::function<std::optional<std::string>(const std::string& file_name)>;
  static StatusOr<SafetensorsModel> OpenResolved(const FileResolver& local_path_of, const std::string& where);
  static StatusOr<SafetensorsModel> OpenFiles(const std::vector<std::string>& paths);

  const TensorView* Find(const std::string& name) const;
  // NotFound naming the tensor when absent; InvalidArgument when the shape differs.
  StatusOr<const TensorView*> Require(const std::string& name, const std::vector<int64_t>& shape) const;
  std::vector<std::string> Names() const;
  size_t size() const { return index_.size(); }

 private:
  std::vector<std::shared_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
};

std::string ShapeToString(const std::vector<int64_t>& shape);

}  // namespace mq
