#include "worker_metrics.h"

namespace mq::worker {

WorkerMetrics::WorkerMetrics() : registry_(std::make_shared<prometheus::Registry>()) {
  running_ = &prometheus::BuildGauge().Name("mq_worker_jobs_running").Help("Jobs executing on this worker").Register(*registry_).Add({});
  registered_ = &prometheus::BuildGauge().Name("mq_worker_registered").Help("1 while registered with the server").Register(*registry_).Add({});
  jobs_ = &prometheus::BuildCounter().Name("mq_worker_jobs_total").Help("Jobs ended on this worker by outcome").Register(*registry_);
  job_seconds_ = &prometheus::BuildCounter().Name("mq_worker_job_seconds_total").Help("Wall time spent in jobs").Register(*registry_).Add({});
  cache_hits_ = &prometheus::BuildCounter().Name("mq_worker_cache_hits_total").Help("Blobs found in the local cache").Register(*registry_).Add({});
  cache_misses_ = &prometheus::BuildCounter().Name("mq_worker_cache_misses_total").Help("Blobs fetched from the server").Register(*registry_).Add({});
  fetched_bytes_ = &prometheus::BuildCounter().Name("mq_worker_fetched_bytes_total").Help("Blob bytes fetched from the server").Register(*registry_).Add({});
  uploaded_bytes_ = &prometheus::BuildCounter().Name("mq_worker_uploaded_bytes_total").Help("Result bytes uploaded").Register(*registry_).Add({});
  device_ = &prometheus::BuildGauge().Name("mq_worker_device_info")
                 .Help("1 for the device this worker computes on (device: cpu | cuda)").Register(*registry_);
  decode_batch_ = &prometheus::BuildHistogram().Name("mq_worker_serving_decode_batch_size")
                       .Help("Sequences per decode step, by model").Register(*registry_);
  decode_seconds_ = &prometheus::BuildHistogram().Name("mq_worker_serving_decode_step_seconds")
                         .Help("Duration of one decode step (forward of the batch), by model").Register(*registry_);
  stage_seconds_ = &prometheus::BuildHistogram().Name("mq_worker_job_stage_duration_seconds")
                        .Help("Wall time of one job stage, by stage").Register(*registry_);
  calibration_tokens_ = &prometheus::BuildCounter().Name("mq_worker_calibration_tokens_total")
                             .Help("Calibration tokens (windows x tokens per window) of succeeded jobs").Register(*registry_).Add({});
}

void WorkerMetrics::ObserveJobStage(const std::string& stage, double seconds) {
  // Stages last from a cached fetch (milliseconds) to a large model's calibration (hours).
  static const prometheus::Histogram::BucketBoundaries kSeconds = {0.01, 0.1, 0.5, 1, 5, 10, 30, 60,
                                                                   300, 900, 1800, 3600, 7200, 14400};
  stage_seconds_->Add({{"stage", stage}}, kSeconds).Observe(seconds);
}

void WorkerMetrics::SetDevice(const std::string& device, const std::string& device_name) {
  device_->Add({{"device", device}, {"device_name", device_name}}).Set(1);
}

void WorkerMetrics::ObserveDecodeStep(const std::string& model, int64_t batch, double seconds) {
  static const prometheus::Histogram::BucketBoundaries kBatch = {1, 2, 4, 8, 16, 32, 64, 128, 256, 512};
  static const prometheus::Histogram::BucketBoundaries kSeconds = {0.0005, 0.001, 0.002, 0.005, 0.01, 0.02,
                                                                   0.05,   0.1,   0.25,  0.5,   1};
  decode_batch_->Add({{"model", model}}, kBatch).Observe(static_cast<double>(batch));
  decode_seconds_->Add({{"model", model}}, kSeconds).Observe(seconds);
}

void WorkerMetrics::JobEnded(const std::string& outcome, double seconds) {
  running_->Decrement();
  jobs_->Add({{"outcome", outcome}}).Increment();
  job_seconds_->Increment(seconds);
}

void WorkerMetrics::SetCacheCounts(uint64_t hits, uint64_t misses, uint64_t fetched_bytes) {
  if (hits > last_hits_) cache_hits_->Increment(static_cast<double>(hits - last_hits_));
  if (misses > last_misses_) cache_misses_->Increment(static_cast<double>(misses - last_misses_));
  if (fetched_bytes > last_fetched_bytes_) fetched_bytes_->Increment(static_cast<double>(fetched_bytes - last_fetched_bytes_));
  last_hits_ = hits;
  last_misses_ = misses;
  last_fetched_bytes_ = fetched_bytes;
}

}  // namespace mq::worker
