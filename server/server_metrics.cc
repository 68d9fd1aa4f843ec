#include "server_metrics.h"

#include "job_state.h"

namespace mq::server {

namespace {

const char* CodeName(int code) {
  static const char* kNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                 "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
                                 "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL",
                                 "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? kNames[code] : "UNKNOWN";
}

}  // namespace

ServerMetrics::ServerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  jobs_ = &prometheus::BuildGauge().Name("mq_jobs").Help("Jobs by state").Register(*registry_);
  queue_depth_ = &prometheus::BuildGauge().Name("mq_queue_depth").Help("Jobs waiting for a worker").Register(*registry_).Add({});
  workers_ = &prometheus::BuildGauge().Name("mq_workers").Help("Registered workers with a live lease, by backend").Register(*registry_);
  waiting_polls_ = &prometheus::BuildGauge().Name("mq_worker_polls_waiting").Help("AcquireJob calls waiting for a job").Register(*registry_).Add({});
  watch_streams_ = &prometheus::BuildGauge().Name("mq_watch_streams").Help("Open WatchJob streams").Register(*registry_).Add({});
  uploaded_bytes_ = &prometheus::BuildCounter().Name("mq_uploaded_bytes_total").Help("File bytes received by uploads").Register(*registry_).Add({});
  downloaded_bytes_ = &prometheus::BuildCounter().Name("mq_downloaded_bytes_total").Help("File bytes sent by ReadFile and FetchBlob").Register(*registry_).Add({});
  jobs_finished_ = &prometheus::BuildCounter().Name("mq_jobs_finished_total").Help("Jobs that reached a terminal state").Register(*registry_);
  rpcs_ = &prometheus::BuildCounter().Name("mq_rpc_requests_total").Help("Finished RPCs by method and status code").Register(*registry_);
  rpc_seconds_ = &prometheus::BuildHistogram().Name("mq_rpc_duration_seconds").Help("RPC duration by method").Register(*registry_);
  for (auto state : {mambaquant::v1::JOB_STATE_QUEUED, mambaquant::v1::JOB_STATE_ASSIGNED, mambaquant::v1::JOB_STATE_RUNNING,
                     mambaquant::v1::JOB_STATE_SUCCEEDED, mambaquant::v1::JOB_STATE_FAILED, mambaquant::v1::JOB_STATE_CANCELLED}) {
    jobs_->Add({{"state", JobStateName(state)}}).Set(0);
  }
}

void ServerMetrics::SetJobCounts(const std::map<mambaquant::v1::JobState, int64_t>& counts) {
  for (auto state : {mambaquant::v1::JOB_STATE_QUEUED, mambaquant::v1::JOB_STATE_ASSIGNED, mambaquant::v1::JOB_STATE_RUNNING,
                     mambaquant::v1::JOB_STATE_SUCCEEDED, mambaquant::v1::JOB_STATE_FAILED, mambaquant::v1::JOB_STATE_CANCELLED}) {
    auto it = counts.find(state);
    jobs_->Add({{"state", JobStateName(state)}}).Set(it == counts.end() ? 0 : static_cast<double>(it->second));
  }
  auto q = counts.find(mambaquant::v1::JOB_STATE_QUEUED);
  queue_depth_->Set(q == counts.end() ? 0 : static_cast<double>(q->second));
}

void ServerMetrics::SetWorkers(const std::map<std::string, int64_t>& live_by_backend) {
  for (const char* backend : {"cpu", "cuda"}) {
    auto it = live_by_backend.find(backend);
    workers_->Add({{"backend", backend}}).Set(it == live_by_backend.end() ? 0 : static_cast<double>(it->second));
  }
}

void ServerMetrics::JobFinished(mambaquant::v1::JobState state) {
  jobs_finished_->Add({{"state", JobStateName(state)}}).Increment();
}

void ServerMetrics::RecordRpc(const std::string& method, int code, double seconds) {
  rpcs_->Add({{"method", method}, {"code", CodeName(code)}}).Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.001, 0.005, 0.025, 0.1, 0.5, 2.5, 10, 60};
  rpc_seconds_->Add({{"method", method}}, kBuckets).Observe(seconds);
}

}  // namespace mq::server
