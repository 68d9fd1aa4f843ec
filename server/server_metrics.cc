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
  leases_expired_ = &prometheus::BuildCounter().Name("mq_worker_leases_expired_total")
                         .Help("Worker leases that expired without a heartbeat renewing them").Register(*registry_).Add({});
  jobs_finished_ = &prometheus::BuildCounter().Name("mq_jobs_finished_total").Help("Jobs that reached a terminal state").Register(*registry_);
  rpcs_ = &prometheus::BuildCounter().Name("mq_rpc_requests_total").Help("Finished RPCs by method and status code").Register(*registry_);
  rpc_seconds_ = &prometheus::BuildHistogram().Name("mq_rpc_duration_seconds").Help("RPC duration by method").Register(*registry_);
  ttft_ = &prometheus::BuildHistogram().Name("mq_serving_time_to_first_token_seconds")
               .Help("Generate: call start to the first token sent, by model").Register(*registry_);
  itl_ = &prometheus::BuildHistogram().Name("mq_serving_inter_token_latency_seconds")
              .Help("Generate: time between consecutive token messages of a completion, by model").Register(*registry_);
  e2e_ = &prometheus::BuildHistogram().Name("mq_serving_e2e_request_latency_seconds")
              .Help("Generate and Score: call start to its end, by model").Register(*registry_);
  queue_time_ = &prometheus::BuildHistogram().Name("mq_serving_queue_time_seconds")
                     .Help("Generate: time a call waited on its worker for state slots, by model").Register(*registry_);
  prompt_tokens_ = &prometheus::BuildCounter().Name("mq_serving_prompt_tokens_total")
                        .Help("Prompt tokens of finished Generate calls, by model").Register(*registry_);
  generation_tokens_ = &prometheus::BuildCounter().Name("mq_serving_generation_tokens_total")
                            .Help("Tokens generated and sent, by model").Register(*registry_);
  requests_ = &prometheus::BuildCounter().Name("mq_serving_requests_total")
                   .Help("Finished inference calls by model and outcome (finish reason or status code)").Register(*registry_);
  running_ = &prometheus::BuildGauge().Name("mq_serving_sequences_running")
                  .Help("Sequences holding a state slot on the workers, by model").Register(*registry_);
  waiting_ = &prometheus::BuildGauge().Name("mq_serving_sequences_waiting")
                  .Help("Sequences queued on the workers for a state slot, by model").Register(*registry_);
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

namespace {
// Latencies from sub-millisecond decode steps to minute-long generations.
const prometheus::Histogram::BucketBoundaries& LatencyBuckets() {
  static const prometheus::Histogram::BucketBoundaries kBuckets = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1,
                                                                    0.25,   0.5,   1,     2.5,   5,    10,   30,   60};
  return kBuckets;
}
}  // namespace

void ServerMetrics::ObserveTimeToFirstToken(const std::string& model, double seconds) {
  ttft_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}
void ServerMetrics::ObserveInterTokenLatency(const std::string& model, double seconds) {
  itl_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}
void ServerMetrics::ObserveRequestLatency(const std::string& model, double seconds) {
  e2e_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}
void ServerMetrics::ObserveQueueTime(const std::string& model, double seconds) {
  queue_time_->Add({{"model", model}}, LatencyBuckets()).Observe(seconds);
}
void ServerMetrics::AddPromptTokens(const std::string& model, int64_t n) {
  prompt_tokens_->Add({{"model", model}}).Increment(static_cast<double>(n));
}
void ServerMetrics::AddGenerationTokens(const std::string& model, int64_t n) {
  generation_tokens_->Add({{"model", model}}).Increment(static_cast<double>(n));
}
void ServerMetrics::RequestFinished(const std::string& model, const std::string& outcome) {
  requests_->Add({{"model", model}, {"outcome", outcome}}).Increment();
}
void ServerMetrics::SetSequences(const std::map<std::string, std::pair<int64_t, int64_t>>& running_waiting) {
  std::lock_guard<std::mutex> l(sequences_mu_);
  for (const auto& m : sequence_models_) {
    if (running_waiting.count(m)) continue;
    running_->Add({{"model", m}}).Set(0);
    waiting_->Add({{"model", m}}).Set(0);
  }
  for (const auto& [m, rw] : running_waiting) {
    running_->Add({{"model", m}}).Set(static_cast<double>(rw.first));
    waiting_->Add({{"model", m}}).Set(static_cast<double>(rw.second));
    sequence_models_.insert(m);
  }
}

}  // namespace mq::server
