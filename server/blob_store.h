// Content-addressed blob store on local disk.
//
// Layout under the root:
//   blobs/sha256/ab/cd/abcd...   complete blobs, named by their SHA-256, fanned out by the first
//                                two bytes so no directory grows huge
//   partial/<name>               bytes being received (uploads), resumable
//   quarantine/<sha>.<unix time> blobs whose bytes no longer hash to their name (disk corruption),
//                                moved aside when found so that the next upload reinstalls them
// A blob appears under blobs/ only after its bytes are fsync'ed and their digest checked, via
// rename(2) followed by an fsync of the directory, so a blob path that exists is always complete
// and correct.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/synchronization/mutex.h"
#include "file_util.h"
#include "sha256.h"

namespace mq::server {

class BlobStore;

// A blob being received in order, possibly across several streams and server restarts.
// Thread-compatible: callers serialize access (the upload manager holds a mutex per file).
class PartialBlob {
 public:
  uint64_t size() const { return size_; }
  // Appends `data`, which must start at size(). FAILED_PRECONDITION otherwise.
  absl::Status Append(uint64_t offset, const void* data, size_t n);
  // Checks size and digest, makes the blob durable and moves it into the store. On a digest
  // mismatch the partial bytes are discarded (size() becomes 0) and DATA_LOSS is returned.
  absl::Status Commit(uint64_t expected_size, const std::string& expected_sha256);
  // Deletes the partial file.
  void Discard();

 private:
  friend class BlobStore;
  PartialBlob(BlobStore* store, std::string path, ScopedFd fd, uint64_t size, Sha256 hash)
      : store_(store), path_(std::move(path)), fd_(std::move(fd)), size_(size), hash_(std::move(hash)) {}
  BlobStore* store_;
  std::string path_;
  ScopedFd fd_;
  uint64_t size_;
  Sha256 hash_;
};

class BlobStore {
 public:
  static absl::StatusOr<std::unique_ptr<BlobStore>> Open(const std::string& root);

  // Path of a (complete) blob; does not check existence. Requires a valid digest.
  std::string BlobPath(const std::string& sha256) const;
  // Size of a complete blob, or NOT_FOUND.
  absl::StatusOr<uint64_t> BlobSize(const std::string& sha256) const;
  bool Contains(const std::string& sha256) const { return BlobSize(sha256).ok(); }
  // Opens a complete blob for reading.
  absl::StatusOr<ScopedFd> OpenBlob(const std::string& sha256) const;
  // Reads a whole (small) blob; INVALID_ARGUMENT above max_bytes.
  absl::StatusOr<std::string> ReadBlob(const std::string& sha256, uint64_t max_bytes) const;
  // Stores bytes held in memory (small files, tests). Returns the digest.
  absl::StatusOr<std::string> Put(absl::string_view data);
  absl::Status Remove(const std::string& sha256);
  // Reads the whole blob and checks that its bytes hash to its name: OK, NOT_FOUND, or DATA_LOSS
  // (corrupted on disk after it was installed).
  absl::Status VerifyBlob(const std::string& sha256) const;
  // Moves a blob out of blobs/ into quarantine/ (kept for inspection, never served).
  absl::Status Quarantine(const std::string& sha256);
  // If the blob exists but is corrupt, quarantines it (logged) so that it counts as absent.
  // Returns whether a correct blob is present; an error only where checking or moving failed.
  absl::StatusOr<bool> PresentAndIntact(const std::string& sha256);
  struct StoredBlob {
    std::string sha256;
    absl::Time modified;  // when it was installed (rename keeps the partial's mtime: its last write)
  };
  // Every complete blob (for garbage collection).
  absl::StatusOr<std::vector<StoredBlob>> ListBlobs() const;

  // Opens (creating or resuming) the partial blob `name` ([A-Za-z0-9._-]+). Existing bytes are
  // re-hashed so the digest continues where it stopped.
  absl::StatusOr<std::unique_ptr<PartialBlob>> OpenPartial(const std::string& name);
  void RemovePartial(const std::string& name);

  const std::string& root() const { return root_; }

 private:
  friend class PartialBlob;
  explicit BlobStore(std::string root) : root_(std::move(root)) {}
  // fsync's fd, renames `from` to the blob path and fsyncs the directory.
  absl::Status Install(int fd, const std::string& from, const std::string& sha256);

  std::string root_;
};

}  // namespace mq::server
