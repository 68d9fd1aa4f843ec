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
}

void WorkerMetrics::JobEnded(const std::string& outcome, double seconds) {
  running_->Decrement();
  jobs_->Add({{"outcome", outcome}}).Increment();
  job_seconds_->Increment(seconds);
}

void WorkerMetrics::SetCacheCounts(uint64_t hits, uint64_t misses) {
  if (hits > last_hits_) cache_hits_->Increment(static_cast<double>(hits - last_hits_));
  if (misses > last_misses_) cache_misses_->Increment(static_cast<double>(misses - last_misses_));
  last_hits_ = hits;
  last_misses_ = misses;
}

}  // namespace mq::worker
