// Prometheus metrics of mq-worker, served on --metrics-listen.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace mq::worker {

class WorkerMetrics {
 public:
  WorkerMetrics();
  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

  void JobStarted() { running_->Increment(); }
  // outcome: SUCCEEDED | FAILED | CANCELLED | ABANDONED
  void JobEnded(const std::string& outcome, double seconds);
  // The blob cache's running totals (BlobCache::hits, misses, fetched_bytes): for jobs and for
  // models loaded to serve alike.
  void SetCacheCounts(uint64_t hits, uint64_t misses, uint64_t fetched_bytes);
  void AddUploadedBytes(uint64_t n) { uploaded_bytes_->Increment(static_cast<double>(n)); }
  void SetRegistered(bool registered) { registered_->Set(registered ? 1 : 0); }
  // The device this worker computes on, as it really runs ("cpu" or "cuda").
  void SetDevice(const std::string& device, const std::string& device_name);
  // One decode step of a served model: its batch size and duration.
  void ObserveDecodeStep(const std::string& model, int64_t batch, double seconds);
  // A job stage ended (the job moved to the next stage or ended): its wall time. stage: "fetch",
  // "load", ... (mambaquant.v1.Stage without the prefix, lower case).
  void ObserveJobStage(const std::string& stage, double seconds);
  // A succeeded job's calibration tokens (ExecutionResult::calibration_tokens).
  void AddCalibrationTokens(int64_t n) { calibration_tokens_->Increment(static_cast<double>(n)); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Gauge* running_;
  prometheus::Gauge* registered_;
  prometheus::Family<prometheus::Counter>* jobs_;
  prometheus::Counter* job_seconds_;
  prometheus::Counter* cache_hits_;
  prometheus::Counter* cache_misses_;
  prometheus::Counter* fetched_bytes_;
  prometheus::Counter* uploaded_bytes_;
  prometheus::Family<prometheus::Gauge>* device_;
  prometheus::Family<prometheus::Histogram>* decode_batch_;
  prometheus::Family<prometheus::Histogram>* decode_seconds_;
  prometheus::Family<prometheus::Histogram>* stage_seconds_;
  prometheus::Counter* calibration_tokens_;
  uint64_t last_hits_ = 0, last_misses_ = 0, last_fetched_bytes_ = 0;  // guarded by being called from one thread
};

}  // namespace mq::worker
