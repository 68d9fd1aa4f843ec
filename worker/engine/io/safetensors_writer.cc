#include "io/safetensors_writer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

namespace mq {

void SafetensorsWriter::Add(std::string name, DType dtype, std::vector<int64_t> shape, std::vector<uint8_t> bytes) {
  entries_[std::move(name)] = Entry{dtype, std::move(shape), std::move(bytes)};
}

void SafetensorsWriter::AddF32(std::string name, std::vector<int64_t> shape, const std::vector<float>& values) {
  std::vector<uint8_t> bytes(values.size() * 4);
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  Add(std::move(name), DType::kF32, std::move(shape), std::move(bytes));
}

void SafetensorsWriter::AddI8(std::string name, std::vector<int64_t> shape, const std::vector<int8_t>& values) {
  std::vector<uint8_t> bytes(values.size());
  if (!values.empty()) std::memcpy(bytes.data(), values.data(), bytes.size());
  Add(std::move(name), DType::kI8, std::move(shape), std::move(bytes));
}

namespace {
Status WriteAll(int fd, const void* data, size_t n, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return InternalError(path + ": write failed: " + std::strerror(errno));
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return OkStatus();
}
}  // namespace

Status SafetensorsWriter::Write(const std::string& path) const {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata_.empty()) {
    nlohmann::ordered_json meta = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata_) meta[k] = v;
    header["__metadata__"] = meta;
  }
  uint64_t offset = 0;
  for (const auto& [name, e] : entries_) {
    header[name] = {{"dtype", DTypeName(e.dtype)},
                    {"shape", e.shape},
                    {"data_offsets", {offset, offset + e.bytes.size()}}};
    offset += e.bytes.size();
  }
  std::string text = header.dump();
  while ((text.size() + 8) % 8 != 0) text.push_back(' ');
  const uint64_t len = text.size();

  const std::string tmp = path + ".tmp";
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return InternalError(tmp + ": cannot create: " + std::strerror(errno));
  Status st = WriteAll(fd, &len, 8, tmp);
  if (st.ok()) st = WriteAll(fd, text.data(), text.size(), tmp);
  for (const auto& [name, e] : entries_) {
    if (!st.ok()) break;
    st = WriteAll(fd, e.bytes.data(), e.bytes.size(), tmp);
  }
  if (st.ok() && ::fsync(fd) != 0) st = InternalError(tmp + ": fsync failed: " + std::strerror(errno));
  ::close(fd);
  if (st.ok() && std::rename(tmp.c_str(), path.c_str()) != 0)
    st = InternalError(path + ": rename failed: " + std::strerror(errno));
  if (!st.ok()) std::remove(tmp.c_str());
  return st;
}

}  // namespace mq
