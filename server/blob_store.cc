#include "blob_store.h"

#include "log.h"

#include <sys/stat.h>

#include <filesystem>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <vector>

#include "absl/strings/str_cat.h"

namespace mq::server {

absl::Status PartialBlob::Append(uint64_t offset, const void* data, size_t n) {
  if (offset != size_) {
    return absl::FailedPreconditionError(
        absl::StrCat("chunk starts at offset ", offset, " but ", size_, " bytes are committed"));
  }
  absl::Status s = PwriteAll(fd_.get(), data, n, offset);
  if (!s.ok()) {
    // The file may hold part of the chunk; cut it back so size_ stays the truth.
    (void)::ftruncate(fd_.get(), static_cast<off_t>(size_));
    return s;
  }
  hash_.Update(data, n);
  size_ += n;
  return absl::OkStatus();
}

absl::Status PartialBlob::Commit(uint64_t expected_size, const std::string& expected_sha256) {
  if (size_ != expected_size) {
    return absl::FailedPreconditionError(absl::StrCat("have ", size_, " of ", expected_size, " bytes"));
  }
  std::string digest = hash_.FinishHex();
  if (digest != expected_sha256) {
    // The bytes are wrong somewhere; the only safe resume point is the start.
    (void)::ftruncate(fd_.get(), 0);
    size_ = 0;
    hash_ = Sha256();
    return absl::DataLossError(
        absl::StrCat("content SHA-256 is ", digest, " but ", expected_sha256, " was declared; bytes discarded"));
  }
  absl::Status s = store_->Install(fd_.get(), path_, digest);
  if (!s.ok()) {
    // The digest state is consumed; restart from nothing rather than guess what reached disk.
    (void)::ftruncate(fd_.get(), 0);
    size_ = 0;
    hash_ = Sha256();
  }
  return s;
}

void PartialBlob::Discard() {
  fd_.Reset();
  ::unlink(path_.c_str());
}

absl::StatusOr<std::unique_ptr<BlobStore>> BlobStore::Open(const std::string& root) {
  for (const char* sub : {"blobs/sha256", "partial"}) {
    absl::Status s = MakeDirs(JoinPath(root, sub));
    if (!s.ok()) return s;
  }
  return std::unique_ptr<BlobStore>(new BlobStore(root));
}

std::string BlobStore::BlobPath(const std::string& sha256) const {
  return absl::StrCat(root_, "/blobs/sha256/", sha256.substr(0, 2), "/", sha256.substr(2, 2), "/", sha256);
}

absl::StatusOr<uint64_t> BlobStore::BlobSize(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError(absl::StrCat("not a SHA-256 digest: ", sha256));
  return FileSize(BlobPath(sha256));
}

absl::StatusOr<ScopedFd> BlobStore::OpenBlob(const std::string& sha256) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError(absl::StrCat("not a SHA-256 digest: ", sha256));
  ScopedFd fd(::open(BlobPath(sha256).c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return absl::NotFoundError(absl::StrCat("blob ", sha256, " not found"));
    return ErrnoStatus(errno, absl::StrCat("open blob ", sha256));
  }
  return fd;
}

absl::StatusOr<std::string> BlobStore::ReadBlob(const std::string& sha256, uint64_t max_bytes) const {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError(absl::StrCat("not a SHA-256 digest: ", sha256));
  return ReadFileToString(BlobPath(sha256), max_bytes);
}

absl::StatusOr<std::string> BlobStore::Put(absl::string_view data) {
  std::string digest = Sha256Hex(data);
  auto present = PresentAndIntact(digest);
  if (!present.ok()) return present.status();
  if (*present) return digest;
  std::string name = absl::StrCat("put-", digest, "-", ::getpid());
  auto partial = OpenPartial(name);
  if (!partial.ok()) return partial.status();
  (*partial)->Discard();  // start from empty whatever an earlier crash left
  partial = OpenPartial(name);
  if (!partial.ok()) return partial.status();
  absl::Status s = (*partial)->Append(0, data.data(), data.size());
  if (s.ok()) s = (*partial)->Commit(data.size(), digest);
  if (!s.ok()) {
    (*partial)->Discard();
    return s;
  }
  return digest;
}

absl::StatusOr<std::vector<BlobStore::StoredBlob>> BlobStore::ListBlobs() const {
  std::vector<StoredBlob> out;
  std::error_code ec;
  const std::filesystem::path dir = absl::StrCat(root_, "/blobs/sha256");
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec); !ec && it != std::filesystem::recursive_directory_iterator();
       it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string name = it->path().filename().string();
    if (!IsSha256Hex(name)) continue;
    struct stat st;
    if (::stat(it->path().c_str(), &st) != 0) continue;  // removed meanwhile
    out.push_back({name, absl::FromTimeT(st.st_mtime)});
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir.string(), ": ", ec.message()));
  return out;
}

absl::Status BlobStore::Remove(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError(absl::StrCat("not a SHA-256 digest: ", sha256));
  if (::unlink(BlobPath(sha256).c_str()) != 0 && errno != ENOENT) {
    return ErrnoStatus(errno, absl::StrCat("remove blob ", sha256));
  }
  return absl::OkStatus();
}

absl::Status BlobStore::VerifyBlob(const std::string& sha256) const {
  auto size = BlobSize(sha256);  // NOT_FOUND when absent, INVALID_ARGUMENT for a malformed digest
  if (!size.ok()) return size.status();
  auto digest = Sha256File(BlobPath(sha256));
  if (!digest.ok()) return digest.status();
  if (*digest != sha256) {
    return absl::DataLossError(absl::StrCat("blob ", sha256, " is corrupt on the server's disk (its ", *size,
                                            " bytes hash to ", *digest, ")"));
  }
  return absl::OkStatus();
}

absl::Status BlobStore::Quarantine(const std::string& sha256) {
  if (!IsSha256Hex(sha256)) return absl::InvalidArgumentError(absl::StrCat("not a SHA-256 digest: ", sha256));
  const std::string dir = JoinPath(root_, "quarantine");
  absl::Status s = MakeDirs(dir);
  if (!s.ok()) return s;
  const std::string dest = absl::StrCat(dir, "/", sha256, ".", absl::ToUnixSeconds(absl::Now()));
  if (::rename(BlobPath(sha256).c_str(), dest.c_str()) != 0) {
    if (errno == ENOENT) return absl::OkStatus();  // moved by a concurrent caller
    return ErrnoStatus(errno, absl::StrCat("quarantine blob ", sha256));
  }
  return FsyncDir(Dirname(BlobPath(sha256)));
}

absl::StatusOr<bool> BlobStore::PresentAndIntact(const std::string& sha256) {
  absl::Status s = VerifyBlob(sha256);
  if (s.ok()) return true;
  if (absl::IsNotFound(s)) return false;
  if (!absl::IsDataLoss(s)) return s;
  Log(LogLevel::kError, "corrupt blob quarantined; the next upload of its bytes reinstalls it")
      .Kv("sha256", sha256)
      .Kv("error", s);
  absl::Status q = Quarantine(sha256);
  if (!q.ok()) return q;
  return false;
}

absl::StatusOr<std::unique_ptr<PartialBlob>> BlobStore::OpenPartial(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name == "." || name == "..") {
    return absl::InvalidArgumentError(absl::StrCat("bad partial blob name: ", name));
  }
  std::string path = absl::StrCat(root_, "/partial/", name);
  ScopedFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("open ", path));
  off_t end = ::lseek(fd.get(), 0, SEEK_END);
  if (end < 0) return ErrnoStatus(errno, absl::StrCat("seek ", path));
  Sha256 hash;
  std::vector<char> buf(1 << 20);
  uint64_t pos = 0;
  while (pos < static_cast<uint64_t>(end)) {
    size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), static_cast<uint64_t>(end) - pos));
    auto n = PreadFull(fd.get(), buf.data(), want, pos);
    if (!n.ok()) return n.status();
    if (*n == 0) break;
    hash.Update(buf.data(), *n);
    pos += *n;
  }
  return std::unique_ptr<PartialBlob>(new PartialBlob(this, path, std::move(fd), pos, std::move(hash)));
}

void BlobStore::RemovePartial(const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos) return;
  ::unlink(absl::StrCat(root_, "/partial/", name).c_str());
}

absl::Status BlobStore::Install(int fd, const std::string& from, const std::string& sha256) {
  if (::fsync(fd) != 0) return ErrnoStatus(errno, absl::StrCat("fsync ", from));
  std::string dest = BlobPath(sha256);
  std::string dir = Dirname(dest);
  absl::Status s = MakeDirs(dir);
  if (!s.ok()) return s;
  // rename(2) replaces an identical blob that a concurrent upload installed first: same bytes.
  if (::rename(from.c_str(), dest.c_str()) != 0) return ErrnoStatus(errno, absl::StrCat("rename to ", dest));
  return FsyncDir(dir);
}

}  // namespace mq::server
