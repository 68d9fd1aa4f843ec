#include "worker_service.h"

#include "serve_stream_reactor.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blob_read_reactor.h"
#include "finished_reactor.h"
#include "job_state.h"
#include "log.h"
#include "name_validation.h"
#include "quant/job_spec.h"
#include "sha256.h"
#include "upload_chunks_reactor.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

namespace {

constexpr size_t kMaxReportBytes = 1 << 20;
constexpr size_t kMaxMessageBytes = 1024;

// Errors of committing a job's result that no retry can change (as opposed to UNAVAILABLE,
// INTERNAL, ABORTED: the database or the disk may come back).
bool ResultRefused(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:     // the export fails the model check
    case absl::StatusCode::kFailedPrecondition:  // its files are incomplete
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kResourceExhausted:   // the output name has no version left, or no room
    case absl::StatusCode::kOutOfRange:
      return true;
    default:
      return false;
  }
}
constexpr size_t kMaxErrorBytes = 4096;
constexpr double kMaxEtaSeconds = 30.0 * 24 * 3600;

absl::Status ValidateWorkerId(const std::string& id) {
  bool ok = id.size() == 18 && id.compare(0, 2, "w-") == 0;
  for (size_t i = 2; ok && i < id.size(); ++i) ok = (id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f');
  if (!ok) return absl::InvalidArgumentError("worker_id must be w-<16 hex>");
  return absl::OkStatus();
}

// A long-polling AcquireJob call: parked in the scheduler until it gets a job, its wait ends, or
// the client goes away. Finish is called exactly once, by whichever comes first.
class AcquireReactor : public grpc::ServerUnaryReactor {
 public:
  AcquireReactor(Scheduler* scheduler, AcquireJobResponse* response) : scheduler_(scheduler), response_(response) {}

  // After this call `this` may already be deleted (answered and done).
  void Park(const std::string& worker_id, absl::Time deadline) {
    uint64_t id = scheduler_->NewWaiterId();
    waiter_id_ = id;
    scheduler_->AddWaiter(id, worker_id, deadline, [this](std::optional<JobAssignment> assignment) {
      if (assignment.has_value()) *response_->mutable_assignment() = *std::move(assignment);
      FinishOnce(grpc::Status::OK);
    });
  }

  void OnCancel() override {
    // If the scheduler already took the waiter, it is answering it now; otherwise answer here.
    if (waiter_id_ != 0 && scheduler_->RemoveWaiter(waiter_id_)) {
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled"));
    }
  }
  void OnDone() override { delete this; }

 private:
  void FinishOnce(const grpc::Status& status) {
    if (!finished_.exchange(true)) Finish(status);
  }
  Scheduler* scheduler_;
  AcquireJobResponse* response_;
  std::atomic<uint64_t> waiter_id_{0};
  std::atomic<bool> finished_{false};
};

}  // namespace

absl::Status WorkerServiceImpl::ClaimWorker(const grpc::CallbackServerContext& ctx, const std::string& worker_id) {
  return owners_.Claim(worker_id, deps_.auth->CallerIdentity(ctx));
}

grpc::ServerUnaryReactor* WorkerServiceImpl::RegisterWorker(grpc::CallbackServerContext* ctx,
                                                            const RegisterWorkerRequest* req,
                                                            RegisterWorkerResponse* resp) {
  // Authorized by the port's auth processor (auth.h) before this runs.
  absl::Status s;
  if (!req->worker_id().empty()) s = ValidateWorkerId(req->worker_id());
  if (s.ok() && !req->worker_id().empty()) s = ClaimWorker(*ctx, req->worker_id());
  if (s.ok() && req->backend() != "cpu" && req->backend() != "cuda") s = absl::InvalidArgumentError("backend must be cpu or cuda");
  if (s.ok() && (req->name().size() > 128 || req->address().size() > 256 || req->device_name().size() > 256 ||
                 req->version().size() > 64)) {
    s = absl::InvalidArgumentError("name, address, device_name or version too long");
  }
  if (s.ok() && (req->max_concurrent_jobs() < 0 || req->max_concurrent_jobs() > 64)) {
    s = absl::InvalidArgumentError("max_concurrent_jobs must be 1..64");
  }
  if (!s.ok()) return Reply(ctx, s);
  RegisterWorkerRequest info = *req;
  if (info.max_concurrent_jobs() == 0) info.set_max_concurrent_jobs(1);
  if (!info.worker_id().empty()) {
    // A (re)registering worker runs nothing yet: whatever it held before goes back to the queue.
    deps_.scheduler->DropWorker(info.worker_id(), "worker re-registered");
  }
  auto id = deps_.workers->Register(info, absl::Now(), deps_.lease);
  if (!id.ok()) return Reply(ctx, id.status());
  s = ClaimWorker(*ctx, *id);
  if (!s.ok()) return Reply(ctx, s);
  resp->set_worker_id(*id);
  resp->set_lease_seconds(static_cast<int32_t>(absl::ToInt64Seconds(deps_.lease)));
  Log(LogLevel::kInfo, "worker registered")
      .Kv("worker", *id).Kv("name", info.name()).Kv("backend", info.backend()).Kv("device", info.device_name());
  deps_.scheduler->Notify();
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Heartbeat(grpc::CallbackServerContext* ctx, const HeartbeatRequest* req,
                                                       HeartbeatResponse* resp) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (!s.ok()) return Reply(ctx, s);
  const absl::Time now = absl::Now();
  s = deps_.workers->Renew(req->worker_id(), now, deps_.lease);
  if (!s.ok()) return Reply(ctx, s);
  // Jobs we think it holds but it does not run: the assignment never reached it. Recent
  // assignments may still be in flight, so they get one lease of grace.
  std::set<std::string> running(req->running_job_ids().begin(), req->running_job_ids().end());
  auto released = deps_.jobs->ReleaseWorkerJobs(req->worker_id(), "the worker does not run it", deps_.max_attempts, now,
                                                running, deps_.lease);
  if (released.ok()) {
    for (const Job& job : *released) {
      Log(LogLevel::kWarning, "job released").Kv("job", job.id()).Kv("worker", req->worker_id()).Kv("reason", "not running on worker");
      deps_.hub->Publish(job);
    }
    if (!released->empty()) deps_.scheduler->Notify();
  }
  auto cancel = deps_.jobs->CancelRequestedOnWorker(req->worker_id());
  if (cancel.ok()) {
    for (auto& id : *cancel) resp->add_cancel_job_ids(id);
  }
  resp->set_lease_seconds(static_cast<int32_t>(absl::ToInt64Seconds(deps_.lease)));
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* WorkerServiceImpl::AcquireJob(grpc::CallbackServerContext* ctx, const AcquireJobRequest* req,
                                                        AcquireJobResponse* resp) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (s.ok() && (req->wait_seconds() < 0 || req->wait_seconds() > 60)) s = absl::InvalidArgumentError("wait_seconds must be 0..60");
  if (s.ok()) s = deps_.workers->Get(req->worker_id()).status();
  if (!s.ok()) return Reply(ctx, s);
  int wait = req->wait_seconds() == 0 ? 20 : req->wait_seconds();
  auto* reactor = new AcquireReactor(deps_.scheduler, resp);
  reactor->Park(req->worker_id(), absl::Now() + absl::Seconds(wait));
  return reactor;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::ReportProgress(grpc::CallbackServerContext* ctx,
                                                            const ReportProgressRequest* req,
                                                            ReportProgressResponse* resp) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (!s.ok()) return Reply(ctx, s);
  // Checked here, where they enter: NaN passes std::clamp and an infinite ETA would be stored
  // and shown to every watcher.
  if (!Stage_IsValid(req->stage())) return Reply(ctx, absl::InvalidArgumentError("unknown stage"));
  if (!std::isfinite(req->stage_fraction()) || !std::isfinite(req->fraction())) {
    return Reply(ctx, absl::InvalidArgumentError("stage_fraction and fraction must be finite"));
  }
  if (!std::isfinite(req->eta_seconds()) || req->eta_seconds() > kMaxEtaSeconds) {
    return Reply(ctx, absl::InvalidArgumentError("eta_seconds must be finite and at most 30 days (negative: unknown)"));
  }
  ProgressUpdate p;
  p.stage = req->stage();
  // Rounding may put a fraction a hair outside 0..1; that is clamped, not refused.
  p.stage_fraction = std::clamp(req->stage_fraction(), 0.0, 1.0);
  p.fraction = std::clamp(req->fraction(), 0.0, 1.0);
  p.eta_seconds = req->eta_seconds() < 0 ? -1.0 : req->eta_seconds();
  p.message = req->message().substr(0, kMaxMessageBytes);
  auto job = deps_.jobs->ReportProgress(req->worker_id(), req->job_id(), p, absl::Now());
  if (!job.ok()) return Reply(ctx, job.status());
  deps_.hub->Publish(*job);
  resp->set_cancel_requested(job->cancel_requested());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<FileChunk>* WorkerServiceImpl::FetchBlob(grpc::CallbackServerContext* ctx,
                                                                  const FetchBlobRequest* req) {
  // Only a caller that owns a registered worker reads blobs.
  absl::Status s = owners_.CheckAnyWorker(deps_.auth->CallerIdentity(*ctx));
  if (s.ok() && !IsSha256Hex(req->sha256())) s = absl::InvalidArgumentError("sha256 must be 64 lower-case hex characters");
  if (!s.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(s));
  // Workers read what jobs and inference need: files of registered versions. The bytes of an
  // upload not yet committed are nobody's business but its uploader's.
  bool referenced = false;
  s = deps_.registry_store->db()->Read([&](SqliteTx& tx) -> absl::Status {
    auto r = deps_.registry_store->DigestReferencedTx(tx, req->sha256());
    if (!r.ok()) return r.status();
    referenced = *r;
    return absl::OkStatus();
  });
  if (!s.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(s));
  if (!referenced) {
    return new FinishedWriteReactor<FileChunk>(grpc::Status(grpc::StatusCode::NOT_FOUND, absl::StrCat("blob ", req->sha256(), " not found")));
  }
  auto size = deps_.registry->blobs()->BlobSize(req->sha256());
  if (!size.ok()) {
    // Referenced by a registered version but gone from the store: damage (DATA_LOSS), which the
    // job reports, not an unknown digest.
    return new FinishedWriteReactor<FileChunk>(grpc::Status(
        grpc::StatusCode::DATA_LOSS, absl::StrCat("blob ", req->sha256(), " of a registered version is missing from the store")));
  }
  if (req->offset() > *size) {
    return new FinishedWriteReactor<FileChunk>(grpc::Status(grpc::StatusCode::OUT_OF_RANGE, "offset past the end"));
  }
  auto fd = deps_.registry->blobs()->OpenBlob(req->sha256());
  if (!fd.ok()) return new FinishedWriteReactor<FileChunk>(ToGrpcStatus(fd.status()));
  return new BlobReadReactor(*std::move(fd), req->offset(), *size, req->sha256(), deps_.metrics);
}

grpc::ServerUnaryReactor* WorkerServiceImpl::StartResultUpload(grpc::CallbackServerContext* ctx,
                                                               const StartResultUploadRequest* req, Upload* resp) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (!s.ok()) return Reply(ctx, s);
  auto job = deps_.jobs->Get(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  if (!IsOnWorker(job->state()) || job->worker_id() != req->worker_id()) {
    return Reply(ctx, absl::FailedPreconditionError(absl::StrCat("job ", req->job_id(), " is not held by ", req->worker_id())));
  }
  CreateUploadRequest create;
  create.set_kind(ARTIFACT_KIND_MODEL);
  create.set_name(job->spec().output_name());
  create.set_description(absl::StrCat(job->spec().preset(), " ", job->spec().bits(), " quantization of ",
                                      job->spec().model(), " by job ", job->id()));
  *create.mutable_files() = req->files();
  auto upload = deps_.uploads->Create(create, job->id(), absl::Now());
  if (!upload.ok()) return Reply(ctx, upload.status());
  *resp = *std::move(upload);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerReadReactor<UploadChunk>* WorkerServiceImpl::UploadResultChunks(grpc::CallbackServerContext* ctx,
                                                                            UploadChunksResponse* resp) {
  // The upload must be the result of a job held by a worker this caller owns.
  const std::string identity = deps_.auth->CallerIdentity(*ctx);
  return new UploadChunksReactor(deps_.uploads, deps_.registry_store, deps_.metrics, resp,
                                 [this, identity](const UploadRecord& record) -> absl::Status {
                                   if (record.job_id.empty()) return absl::PermissionDeniedError("not a job result upload");
                                   auto job = deps_.jobs->Get(record.job_id);
                                   if (!job.ok()) return job.status();
                                   if (!IsOnWorker(job->state())) {
                                     return absl::FailedPreconditionError(absl::StrCat("job ", job->id(), " is not running"));
                                   }
                                   return owners_.Claim(job->worker_id(), identity);
                                 });
}

absl::Status WorkerServiceImpl::FinishWithoutResult(const std::string& worker_id, const std::string& job_id,
                                                    JobState outcome, const std::string& error,
                                                    const std::string& result_upload_id, absl::Time now, Job* finished) {
  absl::Status s = deps_.registry_store->db()->Transaction([&](SqliteTx& tx) -> absl::Status {
    auto f = deps_.jobs->FinishTx(tx, worker_id, job_id, outcome, error.substr(0, kMaxErrorBytes), "", now);
    if (!f.ok()) return f.status();
    *finished = *std::move(f);
    return absl::OkStatus();
  });
  if (s.ok() && !result_upload_id.empty()) (void)deps_.uploads->Abort(result_upload_id);
  return s;
}

grpc::ServerUnaryReactor* WorkerServiceImpl::FinishJob(grpc::CallbackServerContext* ctx, const FinishJobRequest* req,
                                                       FinishJobResponse* resp) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (s.ok() && !IsTerminal(req->outcome())) s = absl::InvalidArgumentError("outcome must be SUCCEEDED, FAILED or CANCELLED");
  if (s.ok() && req->error().size() > kMaxErrorBytes) s = absl::InvalidArgumentError("error is over 4096 bytes");
  if (!s.ok()) return Reply(ctx, s);
  auto current = deps_.jobs->Get(req->job_id());
  if (!current.ok()) return Reply(ctx, current.status());
  if (IsTerminal(current->state()) && current->state() == req->outcome() && current->worker_id() == req->worker_id()) {
    *resp->mutable_job() = *std::move(current);  // a retry of a FinishJob that took effect
    return Reply(ctx, absl::OkStatus());
  }
  const absl::Time now = absl::Now();
  Job finished;
  if (req->outcome() == JOB_STATE_SUCCEEDED) {
    if (req->report_json().size() > kMaxReportBytes) return Reply(ctx, absl::InvalidArgumentError("report_json is over 1 MiB"));
    nlohmann::json report = nlohmann::json::object();
    if (!req->report_json().empty()) {
      report = nlohmann::json::parse(req->report_json(), nullptr, false);
      if (report.is_discarded() || !report.is_object()) return Reply(ctx, absl::InvalidArgumentError("report_json must be a JSON object"));
    }
    // The accuracy-driven mode builds the configuration it chose, which may be another preset than
    // the job's: the registry records what the export is (the report's "preset", one of the
    // engine's names), and the description says how it was chosen.
    std::string built_preset = current->spec().preset();
    if (current->spec().has_tolerable_loss_percent()) {
      auto it = report.find("preset");
      if (it == report.end() || !it->is_string() ||
          !quant::CheckChoice("report.preset", it->get<std::string>(), quant::kPresetNames).ok()) {
        return Reply(ctx, absl::InvalidArgumentError("report_json of an accuracy-driven job must name the preset it built"));
      }
      built_preset = it->get<std::string>();
    }
    // The layers kept at 8-bit weights: the job's, or those its tuning chose (the report's
    // tuning.w8_layers, checked as the job option is: the registry shows what the export holds).
    std::vector<int> w8_layers(current->spec().w8_layers().begin(), current->spec().w8_layers().end());
    if (current->spec().has_tolerable_loss_percent()) {
      const nlohmann::json* chosen = nullptr;
      auto tuning = report.find("tuning");
      if (tuning != report.end() && tuning->is_object()) {
        auto it = tuning->find("w8_layers");
        if (it != tuning->end()) chosen = &*it;
      }
      if (chosen != nullptr && !chosen->is_null()) {
        std::vector<int> layers;
        bool ints = chosen->is_array() && chosen->size() <= static_cast<size_t>(quant::JobSpecLimits::kMaxW8Layers);
        for (size_t i = 0; ints && i < chosen->size(); ++i) {
          const nlohmann::json& v = (*chosen)[i];
          // Bounded before the cast to int; CheckW8Layers judges range, repeats and bits.
          ints = v.is_number_unsigned() && v.get<uint64_t>() < static_cast<uint64_t>(quant::JobSpecLimits::kMaxW8Layers);
          if (ints) layers.push_back(static_cast<int>(v.get<uint64_t>()));
        }
        if (!ints || !quant::CheckW8Layers(current->spec().bits(), layers).ok())
          return Reply(ctx, absl::InvalidArgumentError("report_json tuning.w8_layers must be distinct layer indices of a w4a8 job"));
        w8_layers = std::move(layers);
      }
    }
    auto record = deps_.uploads->GetRecord(req->result_upload_id());
    if (!record.ok()) return Reply(ctx, record.status());
    if (record->job_id != req->job_id()) {
      return Reply(ctx, absl::PermissionDeniedError("result_upload_id belongs to another job"));
    }
    const Job& job = *current;
    Registry::CommitHooks hooks;
    hooks.prepare = [&](Artifact* artifact) -> absl::Status {
      Quantization* q = artifact->mutable_quantization();
      q->set_job_id(job.id());
      q->set_source_model(job.spec().model());
      q->set_preset(built_preset);
      if (job.spec().has_tolerable_loss_percent()) {
        artifact->set_description(absl::StrCat(built_preset, " ", job.spec().bits(), " quantization of ", job.spec().model(),
                                               " by job ", job.id(), " (accuracy-driven, loss budget ",
                                               job.spec().tolerable_loss_percent(), " %: the report's tuning says what was tried)"));
      }
      q->set_bits(job.spec().bits());
      q->set_scope(job.spec().scope());
      std::sort(w8_layers.begin(), w8_layers.end());  // ascending, as the export's config lists them
      for (int layer : w8_layers) q->add_w8_layers(static_cast<uint32_t>(layer));
      q->set_report_json(req->report_json());
      (*artifact->mutable_labels())["source_model"] = job.spec().model();
      return absl::OkStatus();
    };
    hooks.after_insert = [&](SqliteTx& tx, const Artifact& stored) -> absl::Status {
      auto f = deps_.jobs->FinishTx(tx, req->worker_id(), req->job_id(), JOB_STATE_SUCCEEDED, "",
                                    FormatRef(stored.name(), stored.version()), now);
      if (!f.ok()) return f.status();
      finished = *std::move(f);
      return absl::OkStatus();
    };
    auto artifact = deps_.registry->CommitUpload(req->result_upload_id(), now, hooks);
    if (!artifact.ok() && !ResultRefused(artifact.status())) return Reply(ctx, artifact.status());
    if (!artifact.ok()) {
      // The registry will never take this result (the output name has no version left, the
      // export fails the model check, ...): a worker retrying would hold the job RUNNING, and
      // its slot, for ever. The job fails here, saying why.
      s = FinishWithoutResult(req->worker_id(), req->job_id(), JOB_STATE_FAILED,
                              absl::StrCat("the result could not be registered: ", artifact.status().ToString()),
                              req->result_upload_id(), now, &finished);
      if (!s.ok()) return Reply(ctx, s);
    }
  } else {
    s = FinishWithoutResult(req->worker_id(), req->job_id(), req->outcome(), req->error(), req->result_upload_id(), now,
                            &finished);
    if (!s.ok()) return Reply(ctx, s);
  }
  Log(LogLevel::kInfo, "job finished")
      .Kv("job", finished.id()).Kv("state", JobStateName(finished.state())).Kv("worker", req->worker_id())
      .Kv("result", finished.result_model()).Kv("error", finished.error());
  if (deps_.metrics != nullptr) deps_.metrics->JobFinished(finished.state());
  deps_.hub->Publish(finished);
  deps_.scheduler->Notify();
  *resp->mutable_job() = std::move(finished);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* WorkerServiceImpl::Deregister(grpc::CallbackServerContext* ctx, const DeregisterRequest* req,
                                                        DeregisterResponse*) {
  absl::Status s = ValidateWorkerId(req->worker_id());
  if (s.ok()) s = ClaimWorker(*ctx, req->worker_id());
  if (!s.ok()) return Reply(ctx, s);
  deps_.scheduler->DropWorker(req->worker_id(), "worker left");
  owners_.Forget(req->worker_id());
  Log(LogLevel::kInfo, "worker left").Kv("worker", req->worker_id());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerBidiReactor<ServeUp, ServeDown>* WorkerServiceImpl::Serve(grpc::CallbackServerContext* ctx) {
  // The hello's worker id must be the caller's.
  const std::string identity = deps_.auth->CallerIdentity(*ctx);
  return new ServeStreamReactor(deps_.router, [this, identity](const std::string& worker_id) {
    return owners_.Claim(worker_id, identity);
  });
}

}  // namespace mq::server
