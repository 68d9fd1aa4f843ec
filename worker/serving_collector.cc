#include "serving_collector.h"

#include <string>

#include "model_host.h"

namespace mq::worker {
namespace {

prometheus::MetricFamily Gauge(const std::string& name, const std::string& help) {
  prometheus::MetricFamily f;
  f.name = name;
  f.help = help;
  f.type = prometheus::MetricType::Gauge;
  return f;
}

void Add(prometheus::MetricFamily& f, const std::string& model, double value) {
  prometheus::ClientMetric m;
  if (!model.empty()) m.label.push_back({"model", model});
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
}

}  // namespace

std::vector<prometheus::MetricFamily> ServingCollector::Collect() const {
  const mambaquant::v1::WorkerLoad load = host_->Snapshot();
  auto running = Gauge("mq_worker_serving_sequences_running", "Sequences holding a state slot, by model");
  auto waiting = Gauge("mq_worker_serving_sequences_waiting", "Sequences queued for a state slot, by model");
  auto free_slots = Gauge("mq_worker_serving_free_slots", "State slots free, by model");
  auto bytes = Gauge("mq_worker_model_bytes", "Device (or host) bytes a loaded model holds, by model");
  auto loaded = Gauge("mq_worker_models_loaded", "Models loaded for serving");
  auto loading = Gauge("mq_worker_models_loading", "Models being loaded");
  for (const auto& m : load.models()) {
    Add(running, m.model(), m.running());
    Add(waiting, m.model(), m.waiting());
    Add(free_slots, m.model(), m.free_slots());
    Add(bytes, m.model(), static_cast<double>(m.bytes()));
  }
  Add(loaded, "", load.models_size());
  Add(loading, "", load.loading_size());
  return {running, waiting, free_slots, bytes, loaded, loading};
}

}  // namespace mq::worker
