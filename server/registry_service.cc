#include "registry_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blob_read_reactor.h"
#include "finished_reactor.h"
#include "inference_router.h"
#include "job_state.h"
#include "log.h"
#include "name_validation.h"
#include "upload_chunks_reactor.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT: the generated names are long and unambiguous here

namespace {

absl::Status CheckKind(ArtifactKind kind) {
  if (kind != ARTIFACT_KIND_MODEL && kind != ARTIFACT_KIND_DATASET) {
    return absl::InvalidArgumentError("kind must be ARTIFACT_KIND_MODEL or ARTIFACT_KIND_DATASET");
  }
  return absl::OkStatus();
}

absl::Status CheckUploadId(const std::string& id) {
  bool ok = id.size() == 32;
  for (char c : id) ok = ok && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
  if (!ok) return absl::InvalidArgumentError("upload_id must be 32 lower-case hex characters");
  return absl::OkStatus();
}

}  // namespace

grpc::ServerUnaryReactor* RegistryServiceImpl::CreateUpload(grpc::CallbackServerContext* ctx,
                                                            const CreateUploadRequest* req, Upload* resp) {
  absl::Status s;
  auto upload = deps_.uploads->Create(*req, "", absl::Now());
  if (!upload.ok()) return Reply(ctx, upload.status());
  *resp = *std::move(upload);
  Log(LogLevel::kInfo, "upload started").Kv("upload", resp->upload_id()).Kv("name", req->name()).Kv("files", req->files_size());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* RegistryServiceImpl::GetUpload(grpc::CallbackServerContext* ctx, const GetUploadRequest* req,
                                                         Upload* resp) {
  absl::Status s;
  if (s.ok()) s = CheckUploadId(req->upload_id());
  if (!s.ok()) return Reply(ctx, s);
  auto upload = deps_.uploads->Get(req->upload_id());
  if (!upload.ok()) return Reply(ctx, upload.status());
  *resp = *std::move(upload);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerReadReactor<UploadChunk>* RegistryServiceImpl::UploadChunks(grpc::CallbackServerContext* ctx,
                                                                        UploadChunksResponse* resp) {
  absl::Status s;
  return new UploadChunksReactor(deps_.uploads, deps_.registry_store, deps_.metrics, resp,
                                 [](const UploadRecord& record) -> absl::Status {
                                   if (!record.job_id.empty()) {
                                     return absl::PermissionDeniedError("this upload belongs to a job; only its worker writes it");
                                   }
                                   return absl::OkStatus();
                                 });
}

grpc::ServerUnaryReactor* RegistryServiceImpl::CommitUpload(grpc::CallbackServerContext* ctx,
                                                            const CommitUploadRequest* req, Artifact* resp) {
  absl::Status s;
  if (s.ok()) s = CheckUploadId(req->upload_id());
  if (!s.ok()) return Reply(ctx, s);
  auto record = deps_.uploads->GetRecord(req->upload_id());
  // NOT_FOUND goes on: a retry of a commit that took effect gets the same version (the registry
  // remembers committed uploads), anything else stays NOT_FOUND.
  if (!record.ok() && !absl::IsNotFound(record.status())) return Reply(ctx, record.status());
  if (record.ok() && !record->job_id.empty()) {
    return Reply(ctx, absl::PermissionDeniedError("this upload belongs to a job; it is committed when the job finishes"));
  }
  auto artifact = deps_.registry->CommitUpload(req->upload_id(), absl::Now());
  if (!artifact.ok()) return Reply(ctx, artifact.status());
  *resp = *std::move(artifact);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* RegistryServiceImpl::AbortUpload(grpc::CallbackServerContext* ctx,
                                                           const AbortUploadRequest* req, AbortUploadResponse*) {
  absl::Status s;
  if (s.ok()) s = CheckUploadId(req->upload_id());
  if (s.ok()) {
    auto record = deps_.uploads->GetRecord(req->upload_id());
    if (!record.ok()) {
      s = record.status();
    } else if (!record->job_id.empty()) {
      s = absl::PermissionDeniedError("this upload belongs to a job");
    }
  }
  if (s.ok()) s = deps_.uploads->Abort(req->upload_id());
  return Reply(ctx, s);
}

grpc::ServerUnaryReactor* RegistryServiceImpl::GetArtifact(grpc::CallbackServerContext* ctx,
                                                           const GetArtifactRequest* req, Artifact* resp) {
  absl::Status s;
  if (s.ok()) s = CheckKind(req->kind());
  if (!s.ok()) return Reply(ctx, s);
  auto artifact = deps_.registry->Get(req->kind(), req->ref());
  if (!artifact.ok()) return Reply(ctx, artifact.status());
  *resp = *std::move(artifact);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* RegistryServiceImpl::ListArtifacts(grpc::CallbackServerContext* ctx,
                                                             const ListArtifactsRequest* req, ListArtifactsResponse* resp) {
  absl::Status s;
  if (s.ok()) s = CheckKind(req->kind());
  if (s.ok() && (req->page_size() < 0 || req->page_size() > 1000)) s = absl::InvalidArgumentError("page_size must be 0..1000");
  if (!s.ok()) return Reply(ctx, s);
  auto page = deps_.registry->List(req->kind(), req->name(), req->page_size(), req->page_token());
  if (!page.ok()) return Reply(ctx, page.status());
  for (auto& a : page->artifacts) *resp->add_artifacts() = std::move(a);
  resp->set_next_page_token(page->next_page_token);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* RegistryServiceImpl::DeleteArtifact(grpc::CallbackServerContext* ctx,
                                                              const DeleteArtifactRequest* req, DeleteArtifactResponse*) {
  absl::Status s;
  if (s.ok()) s = CheckKind(req->kind());
  if (!s.ok()) return Reply(ctx, s);
  const ArtifactKind kind = req->kind();
  JobStore* jobs = deps_.jobs;
  std::string deleted;
  s = deps_.registry->Delete(kind, req->ref(), [&](SqliteTx& tx, const std::string& resolved) -> absl::Status {
    deleted = resolved;
    auto unfinished = jobs->UnfinishedJobsTx(tx);
    if (!unfinished.ok()) return unfinished.status();
    for (const Job& job : *unfinished) {
      bool uses = kind == ARTIFACT_KIND_MODEL
                      ? job.spec().model() == resolved
                      : (job.spec().calib_dataset() == resolved || job.spec().eval_dataset() == resolved);
      if (uses) {
        return absl::FailedPreconditionError(absl::StrCat(resolved, " is used by job ", job.id(), " (",
                                                          JobStateName(job.state()), "); cancel it or wait"));
      }
    }
    return absl::OkStatus();
  });
  // A deleted model no longer serves: the workers holding it drop it now rather than keeping its
  // memory until eviction or a restart (best effort; the outcome is logged).
  if (s.ok() && kind == ARTIFACT_KIND_MODEL && deps_.router != nullptr && !deleted.empty()) {
    deps_.router->UnloadResolved(deleted, [deleted](absl::Status done) {
      if (!done.ok()) Log(LogLevel::kWarning, "unloading a deleted model").Kv("model", deleted).Kv("error", done);
    });
  }
  return Reply(ctx, s);
}

grpc::ServerWriteReactor<FileChunk>* RegistryServiceImpl::ReadFile(grpc::CallbackServerContext* ctx,
                                                                   const ReadFileRequest* req) {
  absl::Status s;
  if (s.ok()) s = CheckKind(req->kind());
  if (s.ok()) s = ValidateFilePath(req->path());
  if (!s.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(s));
  auto artifact = deps_.registry->Get(req->kind(), req->ref());
  if (!artifact.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(artifact.status()));
  const FileEntry* file = nullptr;
  for (const auto& f : artifact->files()) {
    if (f.path() == req->path()) file = &f;
  }
  if (file == nullptr) {
    return new FinishedWriteReactor<FileChunk>(grpc::Status(
        grpc::StatusCode::NOT_FOUND, absl::StrCat(FormatRef(artifact->name(), artifact->version()), " has no file ", req->path())));
  }
  if (req->offset() > file->size()) {
    return new FinishedWriteReactor<FileChunk>(grpc::Status(
        grpc::StatusCode::OUT_OF_RANGE, absl::StrCat("offset ", req->offset(), " is past the end (", file->size(), ")")));
  }
  auto fd = deps_.registry->blobs()->OpenBlob(file->sha256());
  if (absl::IsNotFound(fd.status())) {
    // The registry names these bytes but the store lost them: damage, not an unknown name.
    return new FinishedWriteReactor<FileChunk>(grpc::Status(
        grpc::StatusCode::DATA_LOSS, absl::StrCat("the stored copy of ", FormatRef(artifact->name(), artifact->version()), " ",
                                                  req->path(), " is missing; upload the same content again to repair it")));
  }
  if (!fd.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(fd.status()));
  return new BlobReadReactor(*std::move(fd), req->offset(), file->size(), file->sha256(), deps_.metrics);
}

}  // namespace mq::server
