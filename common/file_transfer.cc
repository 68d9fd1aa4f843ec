#include "file_transfer.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "file_util.h"
#include "grpc_status.h"
#include "sha256.h"

namespace mq {
namespace {

using mambaquant::v1::FileChunk;
using mambaquant::v1::Upload;
using mambaquant::v1::UploadChunk;
using mambaquant::v1::UploadChunksResponse;

constexpr int kMaxAttempts = 5;

bool IsRetryable(const absl::Status& s) {
  return s.code() == absl::StatusCode::kUnavailable || s.code() == absl::StatusCode::kDeadlineExceeded ||
         s.code() == absl::StatusCode::kAborted || s.code() == absl::StatusCode::kFailedPrecondition;
}

void Backoff(int attempt) {
  std::this_thread::sleep_for(std::chrono::milliseconds(200 << std::min(attempt, 4)));
}


// One stream carrying every incomplete file.
absl::Status SendOnce(const Upload& upload, const std::map<std::string, std::string>& local_paths,
                      const PrepareContextFn& prepare, const OpenUploadStreamFn& open_stream,
                      uint64_t* done, uint64_t total, const TransferProgressFn& progress) {
  grpc::ClientContext ctx;
  prepare(&ctx);
  UploadChunksResponse response;
  auto stream = open_stream(&ctx, &response);
  std::vector<char> buf(kTransferChunkBytes);
  bool stream_broken = false;
  for (const auto& f : upload.files()) {
    if (f.complete() || stream_broken) continue;
    auto it = local_paths.find(f.file().path());
    if (it == local_paths.end()) {
      ctx.TryCancel();
      return absl::InternalError(absl::StrCat("no local file for ", f.file().path()));
    }
    ScopedFd fd(::open(it->second.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd.valid()) {
      ctx.TryCancel();
      return ErrnoStatus(errno, absl::StrCat("open ", it->second));
    }
    uint64_t offset = f.committed_bytes();
    const uint64_t size = f.file().size();
    // An empty file still needs one (empty) chunk so the server completes it.
    bool first = true;
    while (offset < size || (first && size == 0)) {
      first = false;
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), size - offset));
      auto n = PreadFull(fd.get(), buf.data(), want, offset);
      if (!n.ok()) {
        ctx.TryCancel();
        return n.status();
      }
      if (*n != want) {
        ctx.TryCancel();
        return absl::FailedPreconditionError(absl::StrCat(it->second, " changed size during upload"));
      }
      UploadChunk chunk;
      chunk.set_upload_id(upload.upload_id());
      chunk.set_path(f.file().path());
      chunk.set_offset(offset);
      chunk.set_data(buf.data(), *n);
      if (!stream->Write(chunk)) {
        stream_broken = true;  // the server ended the stream; Finish says why
        break;
      }
      offset += *n;
      *done += *n;
      if (progress) progress(*done, total);
    }
  }
  stream->WritesDone();
  return FromGrpcStatus(stream->Finish());
}

}  // namespace

uint64_t PendingBytes(const Upload& upload) {
  uint64_t total = 0;
  for (const auto& f : upload.files()) total += f.file().size() - std::min(f.committed_bytes(), f.file().size());
  return total;
}

absl::StatusOr<mambaquant::v1::FileEntry> DescribeLocalFile(const std::string& local_path,
                                                           const std::string& path) {
  auto size = FileSize(local_path);
  if (!size.ok()) return size.status();
  auto digest = Sha256File(local_path);
  if (!digest.ok()) return digest.status();
  mambaquant::v1::FileEntry entry;
  entry.set_path(path);
  entry.set_size(*size);
  entry.set_sha256(*digest);
  return entry;
}

absl::Status SendUploadFiles(const Upload& upload, const std::map<std::string, std::string>& local_paths,
                             const PrepareContextFn& prepare, const OpenUploadStreamFn& open_stream,
                             const GetUploadFn& get_upload, const TransferProgressFn& progress) {
  Upload state = upload;
  uint64_t total = PendingBytes(state);
  uint64_t done = 0;
  bool any_incomplete = false;
  for (const auto& f : state.files()) any_incomplete |= !f.complete();
  if (!any_incomplete) return absl::OkStatus();
  for (int attempt = 0;; ++attempt) {
    absl::Status s = SendOnce(state, local_paths, prepare, open_stream, &done, total, progress);
    if (s.ok() || !get_upload || !IsRetryable(s) || attempt + 1 >= kMaxAttempts) return s;
    Backoff(attempt);
    auto refreshed = get_upload();
    if (!refreshed.ok()) return refreshed.status();
    state = *refreshed;
    done = total - std::min(total, PendingBytes(state));
  }
}

absl::Status DownloadToFile(const std::string& dest_path, uint64_t expected_size,
                            const std::string& expected_sha256, const PrepareContextFn& prepare,
                            const OpenReadStreamFn& open_stream, const TransferProgressFn& progress) {
  const std::string part = dest_path + ".part";
  ScopedFd fd(::open(part.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!fd.valid()) return ErrnoStatus(errno, absl::StrCat("create ", part));
  // Bytes that must not be resumed from (corrupt, or none at all) leave no .part behind.
  auto discard_part = [&] {
    fd.Reset();
    ::unlink(part.c_str());
  };
  auto existing = FileSize(part);
  if (!existing.ok()) return existing.status();
  uint64_t offset = *existing;
  if (offset > expected_size) {
    if (::ftruncate(fd.get(), 0) != 0) return ErrnoStatus(errno, "ftruncate");
    offset = 0;
  }
  // Resuming: the bytes already on disk count towards the digest.
  Sha256 hash;
  if (offset > 0) {
    std::vector<char> buf(kTransferChunkBytes);
    uint64_t pos = 0;
    while (pos < offset) {
      size_t want = static_cast<size_t>(std::min<uint64_t>(buf.size(), offset - pos));
      auto n = PreadFull(fd.get(), buf.data(), want, pos);
      if (!n.ok()) return n.status();
      if (*n == 0) break;
      hash.Update(buf.data(), *n);
      pos += *n;
    }
  }
  for (int attempt = 0; offset < expected_size || attempt == 0; ++attempt) {
    if (offset >= expected_size) break;
    grpc::ClientContext ctx;
    prepare(&ctx);
    auto reader = open_stream(&ctx, offset);
    FileChunk chunk;
    absl::Status write_status;
    while (reader->Read(&chunk)) {
      if (chunk.offset() != offset || chunk.data().size() > expected_size - offset) {
        ctx.TryCancel();
        write_status = absl::DataLossError(absl::StrCat("server sent bytes at ", chunk.offset(), " (+",
                                                        chunk.data().size(), "), expected ", offset));
        break;
      }
      write_status = PwriteAll(fd.get(), chunk.data().data(), chunk.data().size(), offset);
      if (!write_status.ok()) {
        ctx.TryCancel();
        break;
      }
      hash.Update(chunk.data());
      offset += chunk.data().size();
      if (progress) progress(offset, expected_size);
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    // DATA_LOSS (the server found its copy corrupt after streaming it, or sent bytes at a wrong
    // offset): what arrived may be the corrupt bytes, so nothing of it is kept to resume from —
    // else the next try, after the server is repaired, would fail again on the kept prefix.
    if (absl::IsDataLoss(write_status) || absl::IsDataLoss(s)) {
      discard_part();
      return absl::IsDataLoss(write_status) ? write_status : s;
    }
    if (!write_status.ok()) return write_status;
    if (s.ok()) break;
    if (!IsRetryable(s) || attempt + 1 >= kMaxAttempts) {
      if (offset == 0) discard_part();  // nothing to resume from
      return s;
    }
    Backoff(attempt);
  }
  if (offset != expected_size) {
    return absl::DataLossError(absl::StrCat(dest_path, ": got ", offset, " bytes, expected ", expected_size));
  }
  std::string digest = hash.FinishHex();
  if (digest != expected_sha256) {
    discard_part();
    return absl::DataLossError(absl::StrCat(dest_path, ": SHA-256 ", digest, " != expected ", expected_sha256));
  }
  if (::fsync(fd.get()) != 0) return ErrnoStatus(errno, absl::StrCat("fsync ", part));
  fd.Reset();
  if (::rename(part.c_str(), dest_path.c_str()) != 0) return ErrnoStatus(errno, absl::StrCat("rename ", part));
  return FsyncDir(Dirname(dest_path));
}

}  // namespace mq
