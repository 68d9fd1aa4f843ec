#include "job_service.h"

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "finished_reactor.h"
#include "job_spec_validation.h"
#include "job_state.h"
#include "log.h"
#include "name_validation.h"
#include "vim_artifact_check.h"
#include "watch_job_reactor.h"
#include "worker_store.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

grpc::ServerUnaryReactor* JobServiceImpl::SubmitJob(grpc::CallbackServerContext* ctx, const SubmitJobRequest* req,
                                                    Job* resp) {
  absl::Status s;
  QuantSpec spec = req->spec();
  s = NormalizeQuantSpec(&spec);
  if (!s.ok()) return Reply(ctx, s);
  // Pin every reference to a version now, so the job runs on what the client saw.
  auto model = deps_.registry->Get(ARTIFACT_KIND_MODEL, spec.model());
  if (!model.ok()) return Reply(ctx, model.status());
  spec.set_model(FormatRef(model->name(), model->version()));
  if (s = FinishQuantSpecForModel(&spec, req->spec(), model->model_type()); !s.ok()) return Reply(ctx, s);
  auto calib = deps_.registry->Get(ARTIFACT_KIND_DATASET, spec.calib_dataset());
  if (!calib.ok()) return Reply(ctx, calib.status());
  if (s = CheckJobDataset(*model, *calib, "spec.calib_dataset"); !s.ok()) return Reply(ctx, s);
  spec.set_calib_dataset(FormatRef(calib->name(), calib->version()));
  if (!spec.eval_dataset().empty()) {
    auto eval = deps_.registry->Get(ARTIFACT_KIND_DATASET, spec.eval_dataset());
    if (!eval.ok()) return Reply(ctx, eval.status());
    if (s = CheckJobDataset(*model, *eval, "spec.eval_dataset"); !s.ok()) return Reply(ctx, s);
    spec.set_eval_dataset(FormatRef(eval->name(), eval->version()));
  }
  if (spec.output_name().empty()) {
    // The suffix survives truncation: cutting it off could leave the source model's own name.
    const std::string suffix = absl::StrCat("-", spec.preset(), "-", spec.bits());
    spec.set_output_name(absl::StrCat(model->name().substr(0, kMaxNameBytes - suffix.size()), suffix));
  }
  // A result registered as a new version of its own source would make later jobs on that name
  // quantize an already quantized model.
  if (spec.output_name() == model->name()) {
    return Reply(ctx, absl::InvalidArgumentError(absl::StrCat("spec.output_name: ", model->name(),
                                                              " is the source model; the result needs another name")));
  }
  // An output name with no version left would fail the job only at its end, after the whole run.
  if (auto next = deps_.registry_store->NextVersion(ARTIFACT_KIND_MODEL, spec.output_name(), 0); !next.ok()) {
    return Reply(ctx, absl::Status(next.status().code(), absl::StrCat("spec.output_name: ", next.status().message())));
  }
  auto job = deps_.jobs->Create(spec, model->name(), deps_.max_queued_jobs, absl::Now());
  if (!job.ok()) return Reply(ctx, job.status());
  Log(LogLevel::kInfo, "job submitted").Kv("job", job->id()).Kv("model", spec.model()).Kv("preset", spec.preset()).Kv("bits", spec.bits());
  deps_.hub->Publish(*job);
  deps_.scheduler->Notify();
  *resp = *std::move(job);
  return Reply(ctx, absl::OkStatus());
}

namespace {

// A queued job that names a backend no registered worker has waits for ever without a word: say
// so in its message (computed when read, never stored).
void ExplainWaiting(WorkerStore* workers, const std::vector<Job*>& jobs) {
  bool any = false;
  for (const Job* j : jobs) any = any || (j->state() == JOB_STATE_QUEUED && !j->spec().backend().empty());
  if (!any || workers == nullptr) return;
  auto live = workers->List();
  if (!live.ok()) return;
  for (Job* j : jobs) {
    if (j->state() != JOB_STATE_QUEUED || j->spec().backend().empty()) continue;
    int64_t matching = 0;
    for (const auto& w : *live) matching += w.info.backend() == j->spec().backend();
    if (matching == 0) {
      j->set_message(absl::StrCat("waiting for a ", j->spec().backend(), " worker: none is registered (",
                                  live->size(), " worker(s) of other backends)"));
    }
  }
}

}  // namespace

grpc::ServerUnaryReactor* JobServiceImpl::GetJob(grpc::CallbackServerContext* ctx, const GetJobRequest* req, Job* resp) {
  absl::Status s;
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (!s.ok()) return Reply(ctx, s);
  auto job = deps_.jobs->Get(req->job_id());
  if (!job.ok()) return Reply(ctx, job.status());
  *resp = *std::move(job);
  ExplainWaiting(deps_.workers, {resp});
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::ListJobs(grpc::CallbackServerContext* ctx, const ListJobsRequest* req,
                                                   ListJobsResponse* resp) {
  absl::Status s;
  JobListFilter filter;
  for (int st : req->states()) {
    if (!JobState_IsValid(st) || st == JOB_STATE_UNSPECIFIED) return Reply(ctx, absl::InvalidArgumentError("unknown job state in states"));
    filter.states.push_back(static_cast<JobState>(st));
  }
  if (!req->model_name().empty()) {
    s = ValidateName(req->model_name());
    if (!s.ok()) return Reply(ctx, s);
    filter.model_name = req->model_name();
  }
  if (req->page_size() < 0 || req->page_size() > 1000) return Reply(ctx, absl::InvalidArgumentError("page_size must be 0..1000"));
  filter.page_size = req->page_size();
  filter.page_token = req->page_token();
  auto page = deps_.jobs->List(filter);
  if (!page.ok()) return Reply(ctx, page.status());
  std::vector<Job*> listed;
  for (auto& job : page->jobs) {
    *resp->add_jobs() = std::move(job);
    listed.push_back(resp->mutable_jobs(resp->jobs_size() - 1));
  }
  ExplainWaiting(deps_.workers, listed);
  resp->set_next_page_token(page->next_page_token);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* JobServiceImpl::CancelJob(grpc::CallbackServerContext* ctx, const CancelJobRequest* req,
                                                    Job* resp) {
  absl::Status s;
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (!s.ok()) return Reply(ctx, s);
  auto job = deps_.jobs->Cancel(req->job_id(), absl::Now());
  if (!job.ok()) return Reply(ctx, job.status());
  Log(LogLevel::kInfo, "job cancel requested").Kv("job", job->id()).Kv("state", JobStateName(job->state()));
  if (IsTerminal(job->state()) && deps_.metrics != nullptr) deps_.metrics->JobFinished(job->state());
  deps_.hub->Publish(*job);
  *resp = *std::move(job);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerWriteReactor<JobEvent>* JobServiceImpl::WatchJob(grpc::CallbackServerContext* ctx,
                                                             const WatchJobRequest* req) {
  absl::Status s;
  if (s.ok()) s = ValidateJobId(req->job_id());
  if (!s.ok()) return new FinishedWriteReactor<JobEvent>(ToGrpcStatus(s));
  JobStore* jobs = deps_.jobs;
  std::string id = req->job_id();
  return WatchJobReactor::Start(deps_.hub, deps_.metrics, id, [jobs, id] { return jobs->Get(id); });
}

}  // namespace mq::server
