// Local cache of server blobs by SHA-256 under --cache-dir, so a worker downloads each model or
// dataset once. Entries are written to a temporary file, verified against their digest and
// renamed into place (DownloadToFile), so a present entry is always complete. Least recently used
// entries are evicted beyond max_bytes (entries in use by a running job are kept).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "file_transfer.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::worker {

class BlobCache {
 public:
  // Opens `dir` (created). max_bytes 0: no eviction.
  static absl::StatusOr<std::unique_ptr<BlobCache>> Open(const std::string& dir, uint64_t max_bytes);

  // Fetches `file` from the server unless cached; returns the local path. `open_stream` opens a
  // FetchBlob stream from an offset. Concurrent calls for one digest download it once.
  absl::StatusOr<std::string> Get(const mambaquant::v1::FileEntry& file, const PrepareContextFn& prepare,
                                  const OpenReadStreamFn& open_stream, const TransferProgressFn& progress);
  // Marks digests as used by a running job (not evicted) until Unpin.
  void Pin(const std::string& sha256);
  void Unpin(const std::string& sha256);
  // Evicts least recently used unpinned entries until the cache fits max_bytes.
  void Trim();

  std::string PathFor(const std::string& sha256) const;
  const std::string& dir() const { return dir_; }
  // Whether a blob could be written into the cache now (mq::ProbeWritable of its blob directory).
  absl::Status ProbeWritable() const;
  uint64_t hits() const { return hits_.load(); }
  uint64_t misses() const { return misses_.load(); }
  // Bytes downloaded from the server (cache misses only; a hit transfers nothing).
  uint64_t fetched_bytes() const { return fetched_bytes_.load(); }
  // Cached files found not to match their digest (removed and fetched again).
  uint64_t corrupt() const { return corrupt_.load(); }

 private:
  BlobCache(std::string dir, uint64_t max_bytes) : dir_(std::move(dir)), max_bytes_(max_bytes) {}
  absl::Mutex* DigestMutex(const std::string& sha256);
  // Whether the cached file at `path` (of the right size) holds its digest's bytes, hashed once a
  // process; a mismatch is removed (and counted in corrupt_). An error only when it cannot be.
  absl::StatusOr<bool> CheckCachedOnce(const std::string& sha256, const std::string& path);

  std::string dir_;
  uint64_t max_bytes_;
  std::atomic<uint64_t> hits_{0};
  std::atomic<uint64_t> misses_{0};
  std::atomic<uint64_t> fetched_bytes_{0};
  std::atomic<uint64_t> corrupt_{0};
  absl::Mutex mu_;
  std::map<std::string, std::unique_ptr<absl::Mutex>> downloading_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, int> pins_ ABSL_GUARDED_BY(mu_);
  std::set<std::string> verified_ ABSL_GUARDED_BY(mu_);  // digests checked (or downloaded) by this process
};

}  // namespace mq::worker
