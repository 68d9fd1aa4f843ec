#include "upload_manager.h"

#include "absl/strings/str_cat.h"
#include "log.h"
#include "random_id.h"

namespace mq::server {

using mambaquant::v1::FileEntry;
using mambaquant::v1::Upload;
using mambaquant::v1::UploadFileState;

absl::StatusOr<Upload> UploadManager::Create(const mambaquant::v1::CreateUploadRequest& request,
                                             const std::string& job_id, absl::Time now) {
  absl::Status s = ValidateUploadManifest(request, limits_);
  if (!s.ok()) return s;
  if (request.version() != 0) {
    auto exists = store_->VersionExists(request.kind(), request.name(), request.version());
    if (!exists.ok()) return exists.status();
    if (*exists) {
      return absl::AlreadyExistsError(absl::StrCat(FormatRef(request.name(), request.version()), " already exists"));
    }
  }
  // A version the commit would refuse (below the name's highest, or none left) is refused before
  // any byte is sent; the commit checks again (another upload may take it meanwhile).
  if (auto next = store_->NextVersion(request.kind(), request.name(), request.version()); !next.ok()) return next.status();
  for (const auto& f : request.files()) {
    auto size = blobs_->BlobSize(f.sha256());
    if (size.ok() && *size == f.size()) {
      // Deduplicated content is trusted only after its bytes are checked: a blob corrupted on
      // disk is moved aside here, so this upload sends the bytes again and repairs every version
      // that names them (instead of registering one more version no one can read).
      auto intact = blobs_->PresentAndIntact(f.sha256());
      if (!intact.ok()) return intact.status();
      if (!*intact) size = absl::NotFoundError("quarantined");
    }
    if (size.ok() && *size != f.size()) {
      return absl::InvalidArgumentError(absl::StrCat("file ", f.path(), " is declared as ", f.size(),
                                                     " bytes but content with its sha256 has ", *size));
    }
    if (f.size() == 0 && !size.ok()) {
      auto put = blobs_->Put("");
      if (!put.ok()) return put.status();
    }
  }
  UploadRecord record;
  record.id = NewUploadId();
  record.request = request;
  record.job_id = job_id;
  record.created = now;
  record.touched = now;
  s = store_->InsertUpload(record);
  if (!s.ok()) return s;
  return Get(record.id);
}

UploadFileState UploadManager::FileState(const std::string& upload_id, int index, const FileEntry& file) {
  UploadFileState st;
  *st.mutable_file() = file;
  auto size = blobs_->BlobSize(file.sha256());
  if (size.ok() && *size == file.size()) {
    st.set_committed_bytes(file.size());
    st.set_complete(true);
    return st;
  }
  std::string name = PartialName(upload_id, index);
  std::shared_ptr<OpenFile> open;
  {
    absl::MutexLock lock(&mu_);
    auto it = open_.find(name);
    if (it != open_.end()) open = it->second;
  }
  if (open != nullptr && open->mu.TryLock()) {
    st.set_committed_bytes(open->partial ? open->partial->size() : 0);
    open->mu.Unlock();
    return st;
  }
  // Not open (or busy): the partial file on disk is the committed prefix.
  auto on_disk = FileSize(JoinPath(blobs_->root(), absl::StrCat("partial/", name)));
  st.set_committed_bytes(on_disk.ok() ? std::min(*on_disk, file.size()) : 0);
  return st;
}

absl::StatusOr<Upload> UploadManager::Get(const std::string& upload_id) {
  auto record = store_->GetUpload(upload_id);
  if (!record.ok()) return record.status();
  Upload upload;
  upload.set_upload_id(record->id);
  upload.set_kind(record->request.kind());
  upload.set_name(record->request.name());
  upload.set_version(record->request.version());
  for (int i = 0; i < record->request.files_size(); ++i) {
    *upload.add_files() = FileState(record->id, i, record->request.files(i));
  }
  return upload;
}

absl::StatusOr<UploadFileState> UploadManager::WriteChunk(const UploadRecord& record,
                                                          const mambaquant::v1::UploadChunk& chunk) {
  int index = -1;
  for (int i = 0; i < record.request.files_size(); ++i) {
    if (record.request.files(i).path() == chunk.path()) {
      index = i;
      break;
    }
  }
  if (index < 0) {
    return absl::InvalidArgumentError(absl::StrCat("upload ", record.id, " declares no file \"", chunk.path().substr(0, 255), "\""));
  }
  const FileEntry& file = record.request.files(index);
  if (chunk.data().size() > (4u << 20)) return absl::InvalidArgumentError("chunk is over 4 MiB");
  if (chunk.offset() > file.size() || chunk.data().size() > file.size() - chunk.offset()) {
    return absl::InvalidArgumentError(absl::StrCat("chunk [", chunk.offset(), ", +", chunk.data().size(),
                                                   ") goes beyond the declared size ", file.size(), " of ", file.path()));
  }
  UploadFileState st;
  *st.mutable_file() = file;
  auto existing = blobs_->BlobSize(file.sha256());
  if (existing.ok() && *existing == file.size()) {
    // Already complete (deduplicated or finished by an earlier stream): accept resends silently.
    st.set_committed_bytes(file.size());
    st.set_complete(true);
    return st;
  }
  std::string name = PartialName(record.id, index);
  std::shared_ptr<OpenFile> open;
  {
    absl::MutexLock lock(&mu_);
    auto& slot = open_[name];
    if (slot == nullptr) slot = std::make_shared<OpenFile>();
    open = slot;
  }
  if (!open->mu.TryLock()) {
    return absl::AbortedError(absl::StrCat("another stream is writing ", file.path(), " of upload ", record.id));
  }
  absl::Status s;
  if (open->partial == nullptr) {
    auto partial = blobs_->OpenPartial(name);
    if (partial.ok()) {
      open->partial = *std::move(partial);
    } else {
      s = partial.status();
    }
  }
  if (s.ok()) s = open->partial->Append(chunk.offset(), chunk.data().data(), chunk.data().size());
  if (s.ok() && open->partial->size() == file.size()) {
    s = open->partial->Commit(file.size(), file.sha256());
    if (s.ok()) {
      open->partial.reset();
      st.set_complete(true);
    }
  }
  if (absl::IsResourceExhausted(s) && open->partial != nullptr) {
    // A full disk: kept, these bytes would keep it full for every client until the upload
    // expires. Drop this file's partial bytes (a resume sends the file again).
    open->partial->Discard();
    open->partial.reset();
    s = absl::ResourceExhaustedError(absl::StrCat(file.path(), ": ", s.message(),
                                                  "; the server's disk is full: this file's bytes were dropped"));
  }
  uint64_t committed = st.complete() ? file.size() : (open->partial ? open->partial->size() : 0);
  open->mu.Unlock();
  if (st.complete()) {
    absl::MutexLock lock(&mu_);
    open_.erase(name);
  }
  if (!s.ok()) {
    if (absl::IsFailedPrecondition(s)) {
      return absl::FailedPreconditionError(absl::StrCat(file.path(), ": ", s.message(), "; resume from offset ", committed));
    }
    if (absl::IsDataLoss(s)) return absl::DataLossError(absl::StrCat(file.path(), ": ", s.message()));
    return s;
  }
  st.set_committed_bytes(committed);
  return st;
}

void UploadManager::Release(const UploadRecord& record) {
  for (int i = 0; i < record.request.files_size(); ++i) {
    std::string name = PartialName(record.id, i);
    std::shared_ptr<OpenFile> open;
    {
      absl::MutexLock lock(&mu_);
      auto it = open_.find(name);
      if (it != open_.end()) {
        open = it->second;
        open_.erase(it);
      }
    }
    if (open != nullptr) {
      absl::MutexLock lock(&open->mu);  // a stream finishing its last chunk holds it briefly
      if (open->partial) open->partial->Discard();
      open->partial.reset();
    }
    blobs_->RemovePartial(name);
  }
}

absl::Status UploadManager::Abort(const std::string& upload_id) {
  auto record = store_->GetUpload(upload_id);
  if (!record.ok()) return record.status();
  absl::Status s = store_->DeleteUpload(upload_id);
  if (!s.ok()) return s;
  Release(*record);
  return absl::OkStatus();
}

void UploadManager::CollectStale(absl::Time now, absl::Duration ttl) {
  auto stale = store_->StaleUploads(now - ttl);
  if (!stale.ok()) {
    Log(LogLevel::kWarning, "listing stale uploads failed").Kv("error", stale.status());
    return;
  }
  for (const UploadRecord& r : *stale) {
    if (store_->DeleteUpload(r.id).ok()) {
      Release(r);
      Log(LogLevel::kInfo, "expired upload").Kv("upload", r.id).Kv("name", r.request.name());
    }
  }
}

}  // namespace mq::server
