// The safetensors reader on arbitrary file bytes: never crashes, and what it accepts is sound
// (every tensor's bytes inside the file, its size that of its dtype and shape).
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <string>

#include "fuzz_check.h"
#include "io/safetensors.h"

namespace {

// One in-memory file reused for every input: the reader maps a path, as it does a real file.
std::string InputPath() {
  static const int fd = ::memfd_create("fuzz_safetensors", 0);
  return "/proc/self/fd/" + std::to_string(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = InputPath();
  const int fd = std::stoi(path.substr(path.rfind('/') + 1));
  MQ_FUZZ_CHECK(::ftruncate(fd, 0) == 0);
  MQ_FUZZ_CHECK(::pwrite(fd, data, size, 0) == static_cast<ssize_t>(size));
  auto file = mq::SafetensorsFile::Open(path);
  if (!file.ok()) {
    MQ_FUZZ_CHECK(!file.status().message().empty());
    return 0;
  }
  MQ_FUZZ_CHECK(size >= 8);
  uint64_t covered = 0;
  for (const auto& [name, view] : (*file)->tensors()) {
    MQ_FUZZ_CHECK(view.name == name);
    uint64_t numel = 1;
    for (int64_t d : view.shape) {
      MQ_FUZZ_CHECK(d >= 0);
      numel *= static_cast<uint64_t>(d);
    }
    MQ_FUZZ_CHECK(numel * mq::DTypeSize(view.dtype) == view.nbytes);
    covered += view.nbytes;
    if (view.nbytes > 0) {
      // The view's bytes are readable: touch the first and last (ASan/SEGV if outside).
      volatile uint8_t first = view.data[0];
      volatile uint8_t last = view.data[view.nbytes - 1];
      (void)first;
      (void)last;
    }
  }
  MQ_FUZZ_CHECK(covered <= size);
  return 0;
}
