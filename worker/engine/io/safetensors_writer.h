// Writes a safetensors file: header padded to 8 bytes so every tensor is aligned, written to a
// temporary name, fsynced and renamed so a reader never sees a half-written file.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "io/dtype.h"
#include "util/status.h"

namespace mq {

class SafetensorsWriter {
 public:
  void Add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes);
  void AddF32(std::string name, std::vector<int64_t> shape, const std::vector<float>& values);
  void AddI8(std::string name, std::vector<int64_t> shape, const std::vector<int8_t>& values);
  void SetMetadata(std::string key, std::string value) { metadata_[std::move(key)] = std::move(value); }
  Status Write(const std::string& path) const;

 private:
  struct Entry {
    DType dtype;
    std::vector<int64_t> shape;
    std::vector<uint8_t> bytes;
  };
  std::map<std::string, Entry> entries_;  // sorted by name, as the reference writer orders them
  std::map<std::string, std::string> metadata_;
};

}  // namespace mq
