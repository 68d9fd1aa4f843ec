#include "blob_cache.h"

#include <sys/stat.h>
#include <utime.h>

#include <algorithm>
#include <filesystem>
#include <vector>

#include "absl/strings/str_cat.h"
#include "file_util.h"
#include "log.h"
#include "sha256.h"

namespace mq::worker {

absl::StatusOr<std::unique_ptr<BlobCache>> BlobCache::Open(const std::string& dir, uint64_t max_bytes) {
  absl::Status s = MakeDirs(JoinPath(dir, "sha256"));
  if (!s.ok()) return s;
  return std::unique_ptr<BlobCache>(new BlobCache(dir, max_bytes));
}

absl::Status BlobCache::ProbeWritable() const { return mq::ProbeWritable(JoinPath(dir_, "sha256")); }

std::string BlobCache::PathFor(const std::string& sha256) const {
  return absl::StrCat(dir_, "/sha256/", sha256.substr(0, 2), "/", sha256);
}

absl::Mutex* BlobCache::DigestMutex(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  auto& m = downloading_[sha256];
  if (m == nullptr) m = std::make_unique<absl::Mutex>();
  return m.get();
}

absl::StatusOr<std::string> BlobCache::Get(const mambaquant::v1::FileEntry& file, const PrepareContextFn& prepare,
                                           const OpenReadStreamFn& open_stream, const TransferProgressFn& progress) {
  if (!IsSha256Hex(file.sha256())) return absl::InvalidArgumentError("bad digest in assignment");
  const std::string path = PathFor(file.sha256());
  absl::MutexLock digest_lock(DigestMutex(file.sha256()));
  auto size = FileSize(path);
  bool cached = size.ok() && *size == file.size();
  if (cached) {
    auto intact = CheckCachedOnce(file.sha256(), path);
    if (!intact.ok()) return intact.status();
    cached = *intact;  // false: it was corrupt and is removed, fetched below
  }
  if (cached) {
    ++hits_;
    ::utime(path.c_str(), nullptr);  // recency for eviction
    if (progress) progress(file.size(), file.size());
    return path;
  }
  ++misses_;
  absl::Status s = MakeDirs(Dirname(path));
  if (!s.ok()) return s;
  uint64_t counted = 0;  // bytes of this file already added to fetched_bytes_
  s = DownloadToFile(path, file.size(), file.sha256(), prepare, open_stream, [&](uint64_t done, uint64_t total) {
    if (done > counted) fetched_bytes_ += done - counted;
    counted = std::max(counted, done);
    if (progress) progress(done, total);
  });
  if (!s.ok()) return s;
  {
    absl::MutexLock lock(&mu_);
    verified_.insert(file.sha256());  // DownloadToFile checked the digest of what it wrote
  }
  return path;
}

absl::StatusOr<bool> BlobCache::CheckCachedOnce(const std::string& sha256, const std::string& path) {
  {
    absl::MutexLock lock(&mu_);
    if (verified_.count(sha256) > 0) return true;
  }
  // A file of the right size may still hold other bytes (a disk error, a hand edit, a cache
  // directory shared by mistake): it was served and quantized as is. Its digest is checked once a
  // process (the first use after a restart) and a mismatch is removed, to be fetched again.
  auto digest = Sha256File(path);
  if (digest.ok() && *digest == sha256) {
    absl::MutexLock lock(&mu_);
    verified_.insert(sha256);
    return true;
  }
  Log(LogLevel::kWarning, "cached file does not match its digest; fetching it again")
      .Kv("sha256", sha256).Kv("error", digest.ok() ? std::string("other bytes") : digest.status().ToString());
  ++corrupt_;
  if (::unlink(path.c_str()) != 0) return absl::InternalError(absl::StrCat("cannot remove the corrupt cached file ", sha256));
  return false;
}

void BlobCache::Pin(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  pins_[sha256]++;
}

void BlobCache::Unpin(const std::string& sha256) {
  absl::MutexLock lock(&mu_);
  if (--pins_[sha256] <= 0) pins_.erase(sha256);
}

void BlobCache::Trim() {
  if (max_bytes_ == 0) return;
  struct Entry {
    std::string path, digest;
    uint64_t size;
    int64_t mtime;
  };
  std::vector<Entry> entries;
  uint64_t total = 0;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(JoinPath(dir_, "sha256"), ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string name = it->path().filename().string();
    if (!IsSha256Hex(name)) continue;  // .part files of downloads in progress
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0) continue;
    entries.push_back({it->path().string(), name, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)});
    total += static_cast<uint64_t>(st.st_size);
  }
  if (total <= max_bytes_) return;
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.mtime < b.mtime; });
  absl::MutexLock lock(&mu_);
  for (const Entry& e : entries) {
    if (total <= max_bytes_) break;
    if (pins_.count(e.digest)) continue;
    if (::unlink(e.path.c_str()) == 0) {
      verified_.erase(e.digest);
      total -= e.size;
      Log(LogLevel::kInfo, "cache evicted").Kv("sha256", e.digest).Kv("bytes", e.size);
    }
  }
}

}  // namespace mq::worker
