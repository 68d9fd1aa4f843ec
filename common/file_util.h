// POSIX file helpers with errors as absl::Status. Durable writes go to a temporary file in the
// target directory, are fsync'ed, renamed into place, and the directory is fsync'ed, so a crash
// leaves either the old or the new file, never a torn one.
#pragma once

#include <cstdint>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace mq {

// Owns a file descriptor.
class ScopedFd {
 public:
  ScopedFd() = default;
  explicit ScopedFd(int fd) : fd_(fd) {}
  ~ScopedFd() { Reset(); }
  ScopedFd(ScopedFd&& other) noexcept : fd_(other.Release()) {}
  ScopedFd& operator=(ScopedFd&& other) noexcept {
    if (this != &other) {
      Reset();
      fd_ = other.Release();
    }
    return *this;
  }
  ScopedFd(const ScopedFd&) = delete;
  ScopedFd& operator=(const ScopedFd&) = delete;

  int get() const { return fd_; }
  bool valid() const { return fd_ >= 0; }
  int Release() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }
  void Reset();

 private:
  int fd_ = -1;
};

absl::Status ErrnoStatus(int err, absl::string_view what);

// mkdir -p.
absl::Status MakeDirs(const std::string& path);
absl::Status FsyncDir(const std::string& dir);
// Creates `dir` if needed, then creates, writes and removes a small file in it: whether files can
// be written there now (a read-only remount, a full disk, lost permissions), not only at startup.
absl::Status ProbeWritable(const std::string& dir);
absl::StatusOr<std::string> ReadFileToString(const std::string& path, uint64_t max_bytes);
absl::Status WriteFileAtomic(const std::string& path, absl::string_view content);
// Writes all of `data` at `offset` (pwrite loop).
absl::Status PwriteAll(int fd, const void* data, size_t size, uint64_t offset);
// Reads up to `size` bytes at `offset`; returns the count (short only at end of file).
absl::StatusOr<size_t> PreadFull(int fd, void* data, size_t size, uint64_t offset);
// Size of a regular file, NOT_FOUND when absent.
absl::StatusOr<uint64_t> FileSize(const std::string& path);
bool PathExists(const std::string& path);
// rm -rf; missing paths are fine.
absl::Status RemoveAll(const std::string& path);
std::string JoinPath(absl::string_view a, absl::string_view b);
std::string Dirname(const std::string& path);

}  // namespace mq
