// Prometheus metrics of mq-server, served on --metrics-listen. Families are created once; the
// per-label children are cached by prometheus-cpp, so recording is a lookup plus an atomic add.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <set>
#include <utility>
#include <memory>
#include <string>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "mambaquant/v1/common.pb.h"

namespace mq::server {

class ServerMetrics {
 public:
  ServerMetrics();

  std::shared_ptr<prometheus::Registry> registry() { return registry_; }

  void SetJobCounts(const std::map<mambaquant::v1::JobState, int64_t>& counts);
  void SetWorkers(const std::map<std::string, int64_t>& live_by_backend);
  void SetWaitingPolls(int64_t n) { waiting_polls_->Set(static_cast<double>(n)); }
  void AddUploadedBytes(uint64_t n) { uploaded_bytes_->Increment(static_cast<double>(n)); }
  void AddDownloadedBytes(uint64_t n) { downloaded_bytes_->Increment(static_cast<double>(n)); }
  void JobFinished(mambaquant::v1::JobState state);
  // A worker's lease ran out without a heartbeat renewing it (the worker is dropped).
  void LeaseExpired() { leases_expired_->Increment(); }
  // `method` is the full gRPC method ("/mambaquant.v1.JobService/SubmitJob"); code its status.
  void RecordRpc(const std::string& method, int code, double seconds);
  // Serving (vLLM's names with our prefix), per model "name:version".
  void ObserveTimeToFirstToken(const std::string& model, double seconds);
  void ObserveInterTokenLatency(const std::string& model, double seconds);
  void ObserveRequestLatency(const std::string& model, double seconds);
  void ObserveQueueTime(const std::string& model, double seconds);
  void AddPromptTokens(const std::string& model, int64_t n);
  void AddGenerationTokens(const std::string& model, int64_t n);
  // outcome: a finish reason (length | stop | eos) or a status code name (CANCELLED, ...).
  void RequestFinished(const std::string& model, const std::string& outcome);
  // Sequences running and waiting per model over every worker (from the workers' load reports).
  void SetSequences(const std::map<std::string, std::pair<int64_t, int64_t>>& running_waiting);
  void WatchStreamOpened() { watch_streams_->Increment(); }
  void WatchStreamClosed() { watch_streams_->Decrement(); }

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  prometheus::Family<prometheus::Gauge>* jobs_;
  prometheus::Gauge* queue_depth_;
  prometheus::Family<prometheus::Gauge>* workers_;
  prometheus::Gauge* waiting_polls_;
  prometheus::Gauge* watch_streams_;
  prometheus::Counter* uploaded_bytes_;
  prometheus::Counter* downloaded_bytes_;
  prometheus::Counter* leases_expired_;
  prometheus::Family<prometheus::Counter>* jobs_finished_;
  prometheus::Family<prometheus::Counter>* rpcs_;
  prometheus::Family<prometheus::Histogram>* rpc_seconds_;
  prometheus::Family<prometheus::Histogram>* ttft_;
  prometheus::Family<prometheus::Histogram>* itl_;
  prometheus::Family<prometheus::Histogram>* e2e_;
  prometheus::Family<prometheus::Histogram>* queue_time_;
  prometheus::Family<prometheus::Counter>* prompt_tokens_;
  prometheus::Family<prometheus::Counter>* generation_tokens_;
  prometheus::Family<prometheus::Counter>* requests_;
  prometheus::Family<prometheus::Gauge>* running_;
  prometheus::Family<prometheus::Gauge>* waiting_;
  std::mutex sequences_mu_;  // guards sequence_models_
  std::set<std::string> sequence_models_;  // models with running/waiting gauges (zeroed when gone)
};

}  // namespace mq::server
