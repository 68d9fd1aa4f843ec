#include "job_runner.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <thread>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "artifact_files.h"
#include "file_transfer.h"
#include "file_util.h"
#include "grpc_status.h"
#include "log.h"
#include "report_paths.h"

namespace mq::worker {

using namespace mambaquant::v1;  // NOLINT

namespace {

constexpr absl::Duration kReportInterval = absl::Milliseconds(500);
constexpr absl::Duration kRpcTimeout = absl::Seconds(10);
constexpr absl::Duration kGiveUpAfter = absl::Minutes(30);

bool IsPermanent(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kPermissionDenied:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kUnauthenticated:
      return true;
    default:
      return false;
  }
}

}  // namespace

JobRunner::JobRunner(const ServerConnection* server, BlobCache* cache, JobExecutor* executor, WorkerMetrics* metrics,
                     std::string worker_id, std::string work_dir, JobAssignment assignment)
    : server_(server),
      cache_(cache),
      executor_(executor),
      metrics_(metrics),
      worker_id_(std::move(worker_id)),
      work_dir_(std::move(work_dir)),
      assignment_(std::move(assignment)),
      start_(absl::Now()),
      tracker_(start_, assignment_.has_eval_file()) {}

JobRunner::~JobRunner() {
  {
    absl::MutexLock lock(&mu_);
    reporter_exit_ = true;
  }
  if (reporter_.joinable()) reporter_.join();
}

void JobRunner::Stop(StopReason reason) {
  int expected = 0;
  // The first reason wins, except that abandoning overrides a requested cancel (nobody to tell).
  if (!stop_.compare_exchange_strong(expected, static_cast<int>(reason)) && reason == StopReason::kAbandon) {
    stop_.store(static_cast<int>(reason));
  }
}

absl::Status ProbeJobStorage(const std::string& work_dir, const BlobCache& cache) {
  absl::Status s = ProbeWritable(work_dir);
  if (s.ok()) s = cache.ProbeWritable();
  return s;
}

std::string JobRunner::Shown(const std::string& text) {
  absl::MutexLock lock(&mu_);
  return ReplaceLocalPathsInText(text, shown_paths_);
}

void JobRunner::SetProgress(Stage stage, double fraction, const std::string& message) {
  absl::MutexLock lock(&mu_);
  if (stage != stage_) {
    stage_changed_ = true;
    EndStageLocked();
  }
  stage_ = stage;
  stage_fraction_ = fraction;
  message_ = ReplaceLocalPathsInText(message, shown_paths_);
  tracker_.Update(stage, fraction);
  dirty_ = true;
}

void JobRunner::EndStageLocked() {
  const absl::Time now = absl::Now();
  if (metrics_ != nullptr && stage_ != STAGE_UNSPECIFIED) {
    std::string name = absl::AsciiStrToLower(Stage_Name(stage_));
    if (absl::StartsWith(name, "stage_")) name.erase(0, 6);
    metrics_->ObserveJobStage(name, absl::ToDoubleSeconds(now - stage_start_));
  }
  stage_start_ = now;
}

void JobRunner::ReporterLoop() {
  LogContext log_context({{"job", assignment_.job_id()}, {"model", assignment_.spec().model()}});
  for (;;) {
    ReportProgressRequest req;
    {
      absl::MutexLock lock(&mu_);
      auto ready = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return reporter_exit_ || stage_changed_; };
      mu_.AwaitWithTimeout(absl::Condition(&ready), kReportInterval);
      if (reporter_exit_) return;
      if (!dirty_) continue;
      dirty_ = false;
      stage_changed_ = false;
      req.set_worker_id(worker_id_);
      req.set_job_id(assignment_.job_id());
      req.set_stage(stage_);
      req.set_stage_fraction(stage_fraction_);
      req.set_fraction(tracker_.fraction());
      req.set_eta_seconds(tracker_.EtaSeconds(absl::Now()));
      req.set_message(message_);
    }
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, kRpcTimeout);
    ReportProgressResponse resp;
    absl::Status s = FromGrpcStatus(server_->stub->ReportProgress(&ctx, req, &resp));
    if (s.ok() && resp.cancel_requested()) {
      Log(LogLevel::kInfo, "cancel requested").Kv("job", assignment_.job_id());
      Stop(StopReason::kCancelRequested);
    } else if (absl::IsFailedPrecondition(s) || absl::IsNotFound(s)) {
      Log(LogLevel::kWarning, "job no longer ours; abandoning").Kv("job", assignment_.job_id()).Kv("error", s);
      Stop(StopReason::kAbandon);
    }
    // Other errors (server restarting): the next report carries the newest state anyway.
  }
}

absl::Status JobRunner::Fetch(const std::string& job_dir, ExecutionRequest* request) {
  uint64_t total = 0;
  for (const auto& f : assignment_.model_files()) total += f.size();
  total += assignment_.calib_file().size();
  if (assignment_.has_eval_file()) total += assignment_.eval_file().size();
  uint64_t done_before = 0;
  auto progress = [&](const FileEntry& file, uint64_t done, uint64_t* last) {
    *last = done;
    SetProgress(STAGE_FETCH, total ? static_cast<double>(done_before + done) / total : 1.0,
                absl::StrCat("fetching ", file.path()));
  };
  auto get = [&](const FileEntry& file) -> absl::StatusOr<std::string> {
    if (stopped()) return absl::CancelledError("stopped");
    cache_->Pin(file.sha256());
    uint64_t last = 0;
    auto path = FetchBlobToCache(cache_, server_, file, [&](uint64_t done) { progress(file, done, &last); });
    done_before += file.size();
    return path;
  };
  const std::string model_dir = JoinPath(job_dir, "model");
  uint64_t last = 0, previous_size = 0;
  absl::Status fetched = MaterializeArtifact(
      cache_, server_, assignment_.model_files(), model_dir,
      [&](const FileEntry& file) {
        if (stopped()) return absl::CancelledError("stopped");
        cache_->Pin(file.sha256());
        done_before += previous_size;
        previous_size = file.size();
        last = 0;
        return absl::OkStatus();
      },
      [&](const FileEntry& file, uint64_t done) { progress(file, done, &last); });
  if (!fetched.ok()) return fetched;
  done_before += previous_size;
  auto calib = get(assignment_.calib_file());
  if (!calib.ok()) return calib.status();
  request->calib_path = *calib;
  if (assignment_.has_eval_file()) {
    auto eval = get(assignment_.eval_file());
    if (!eval.ok()) return eval.status();
    request->eval_path = *eval;
  }
  request->model_dir = model_dir;
  return absl::OkStatus();
}

absl::StatusOr<std::string> JobRunner::UploadResult(const std::string& output_dir) {
  StartResultUploadRequest start;
  start.set_worker_id(worker_id_);
  start.set_job_id(assignment_.job_id());
  std::map<std::string, std::string> local;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(output_dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    std::string rel = std::filesystem::relative(it->path(), output_dir, ec).string();
    auto entry = DescribeLocalFile(it->path().string(), rel);
    if (!entry.ok()) return entry.status();
    *start.add_files() = *entry;
    local[rel] = it->path().string();
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", output_dir, ": ", ec.message()));
  Upload upload;
  {
    grpc::ClientContext ctx;
    server_->Prepare(&ctx, kRpcTimeout);
    absl::Status s = FromGrpcStatus(server_->stub->StartResultUpload(&ctx, start, &upload));
    if (!s.ok()) return s;
  }
  uint64_t last = 0;
  absl::Status s = SendUploadFiles(
      upload, local, [this](grpc::ClientContext* ctx) { server_->Prepare(ctx); },
      [this](grpc::ClientContext* ctx, UploadChunksResponse* resp) {
        return std::unique_ptr<grpc::ClientWriterInterface<UploadChunk>>(server_->stub->UploadResultChunks(ctx, resp));
      },
      nullptr,
      [&](uint64_t done, uint64_t total) {
        if (metrics_ != nullptr && done > last) metrics_->AddUploadedBytes(done - last);
        last = done;
        SetProgress(STAGE_UPLOAD, total ? static_cast<double>(done) / total : 1.0, "uploading result");
      });
  if (!s.ok()) return s;
  return upload.upload_id();
}

void JobRunner::Finish(JobState outcome, const std::string& error, const std::string& report_json,
                       const std::string& output_dir) {
  const absl::Time give_up = absl::Now() + kGiveUpAfter;
  absl::Duration backoff = absl::Milliseconds(250);
  std::string message = error;
  for (;;) {
    if (stop_.load() == static_cast<int>(StopReason::kAbandon)) return;
    FinishJobRequest req;
    req.set_worker_id(worker_id_);
    req.set_job_id(assignment_.job_id());
    req.set_outcome(outcome);
    req.set_error(message.substr(0, 4096));
    absl::Status s;
    if (outcome == JOB_STATE_SUCCEEDED) {
      // A server restart loses nothing already uploaded: complete blobs are deduplicated.
      auto upload_id = UploadResult(output_dir);
      s = upload_id.status();
      if (s.ok()) {
        req.set_result_upload_id(*upload_id);
        req.set_report_json(report_json);
      } else if (absl::IsResourceExhausted(s)) {
        // The server has no room for the result (a full disk): retrying would hold the job for
        // kGiveUpAfter and re-send the result into the same full disk. Fail the job, saying why.
        outcome = JOB_STATE_FAILED;
        message = absl::StrCat("the result could not be stored: ", s.ToString());
        continue;
      }
    }
    if (s.ok()) {
      grpc::ClientContext ctx;
      server_->Prepare(&ctx, absl::Seconds(60));
      FinishJobResponse resp;
      s = FromGrpcStatus(server_->stub->FinishJob(&ctx, req, &resp));
      if (s.ok()) {
        Log(LogLevel::kInfo, "job finished").Kv("job", assignment_.job_id()).Kv("state", JobState_Name(resp.job().state()))
            .Kv("result", resp.job().result_model());
        return;
      }
    }
    if (IsPermanent(s) || absl::Now() > give_up) {
      Log(LogLevel::kError, "could not finish job on the server").Kv("job", assignment_.job_id()).Kv("error", s);
      return;
    }
    Log(LogLevel::kWarning, "finishing job failed; retrying").Kv("job", assignment_.job_id()).Kv("error", s);
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(5));
  }
}

void JobRunner::Run() {
  // Every line this job's thread logs (fetch, cache, executor) names the job and its model.
  LogContext log_context({{"job", assignment_.job_id()}, {"model", assignment_.spec().model()}});
  reporter_ = std::thread([this] { ReporterLoop(); });
  if (metrics_ != nullptr) metrics_->JobStarted();
  const std::string job_dir = JoinPath(work_dir_, absl::StrCat(assignment_.job_id(), "-", assignment_.attempt()));
  Log(LogLevel::kInfo, "job started").Kv("job", assignment_.job_id()).Kv("attempt", assignment_.attempt())
      .Kv("model", assignment_.spec().model()).Kv("preset", assignment_.spec().preset()).Kv("bits", assignment_.spec().bits());
  (void)RemoveAll(job_dir);
  ExecutionRequest request;
  request.spec = assignment_.spec();
  request.output_dir = JoinPath(job_dir, "out");
  auto set_shown_paths = [&] {
    auto paths = ReportPathReplacements(request);
    paths.emplace_back(job_dir, "<job>");
    paths.emplace_back(cache_->dir(), "<cache>");
    paths.emplace_back(work_dir_, "<work>");
    std::stable_sort(paths.begin(), paths.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
    absl::MutexLock lock(&mu_);
    shown_paths_ = std::move(paths);
  };
  set_shown_paths();
  SetProgress(STAGE_FETCH, 0, "fetching inputs");
  absl::Status s = MakeDirs(job_dir);
  if (s.ok()) s = Fetch(job_dir, &request);
  if (s.ok()) set_shown_paths();  // now with the fetched inputs' paths
  absl::StatusOr<ExecutionResult> result = absl::UnknownError("not run");
  absl::Status storage;
  if (!s.ok() && !stopped()) {
    // Failing before the engine ran: if this worker cannot write its own directories, the job is
    // not at fault and another worker should take it (failing it here would let one broken
    // worker fail the whole queue).
    storage = ProbeJobStorage(work_dir_, *cache_);
  }
  if (!storage.ok()) {
    handed_back_.store(true);
    result = s;
  } else if (!s.ok()) {
    result = s;
  } else {
    result = executor_->Execute(request, [this](const ExecutionProgress& p) {
      SetProgress(p.stage, p.fraction, p.message);
      return !stopped();
    });
  }
  std::string outcome_name;
  const StopReason reason = static_cast<StopReason>(stop_.load());
  if (handed_back_.load()) {
    outcome_name = "HANDED_BACK";
    Log(LogLevel::kError, "this worker cannot write its directories; job handed back")
        .Kv("job", assignment_.job_id()).Kv("error", storage).Kv("job_error", s);
  } else if (reason == StopReason::kAbandon) {
    outcome_name = "ABANDONED";
    Log(LogLevel::kInfo, "job abandoned").Kv("job", assignment_.job_id());
  } else if (reason == StopReason::kCancelRequested) {
    outcome_name = "CANCELLED";
    Finish(JOB_STATE_CANCELLED, "cancelled by request", "", "");
  } else if (!result.ok()) {
    outcome_name = "FAILED";
    Log(LogLevel::kWarning, "job failed").Kv("job", assignment_.job_id()).Kv("error", result.status());
    Finish(JOB_STATE_FAILED, Shown(result.status().ToString()), "", "");
  } else {
    SetProgress(STAGE_UPLOAD, 0, "uploading result");
    Finish(JOB_STATE_SUCCEEDED, "", result->report_json, request.output_dir);
    outcome_name = stop_.load() == static_cast<int>(StopReason::kAbandon) ? "ABANDONED" : "SUCCEEDED";
    if (metrics_ != nullptr && outcome_name == "SUCCEEDED") metrics_->AddCalibrationTokens(result->calibration_tokens);
  }
  for (const auto& f : assignment_.model_files()) cache_->Unpin(f.sha256());
  cache_->Unpin(assignment_.calib_file().sha256());
  if (assignment_.has_eval_file()) cache_->Unpin(assignment_.eval_file().sha256());
  (void)RemoveAll(job_dir);
  {
    absl::MutexLock lock(&mu_);
    EndStageLocked();  // the last stage, whatever the outcome
  }
  if (metrics_ != nullptr) metrics_->JobEnded(outcome_name, absl::ToDoubleSeconds(absl::Now() - start_));
  {
    absl::MutexLock lock(&mu_);
    reporter_exit_ = true;
  }
  reporter_.join();
  done_.store(true);
}

}  // namespace mq::worker
