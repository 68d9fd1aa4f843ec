#include "device_memory_collector.h"

#include <string>

namespace mq::worker {
namespace {

prometheus::MetricFamily OneGauge(const std::string& name, const std::string& help, double value) {
  prometheus::MetricFamily f{name, help, prometheus::MetricType::Gauge, {}};
  prometheus::ClientMetric m;
  m.gauge.value = value;
  f.metric.push_back(std::move(m));
  return f;
}

}  // namespace

std::vector<prometheus::MetricFamily> DeviceMemoryCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  if (plugin_ == nullptr) return out;
  out.push_back(OneGauge("mq_worker_gpu_memory_total_bytes", "Memory of the GPU this worker computes on",
                         static_cast<double>(total_bytes_)));
  if (plugin_->device_memory_used != nullptr) {
    out.push_back(OneGauge("mq_worker_gpu_memory_used_bytes", "GPU memory in use on this worker's device",
                           static_cast<double>(plugin_->device_memory_used())));
  }
  return out;
}

}  // namespace mq::worker
