// GPU memory of a CUDA worker read at scrape time: used bytes from the backend plugin
// (BackendPlugin::device_memory_used, the figure the model host's unload check uses) and the
// device's total from the plugin's probe. A CPU worker exports neither family (there is no GPU
// to report; host memory is process_resident_memory_bytes).
#pragma once

#include <cstdint>
#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

#include "serve/backend_plugin.h"

namespace mq::worker {

class DeviceMemoryCollector : public prometheus::Collectable {
 public:
  // plugin: the loaded CUDA backend (not null); total_bytes: its probe's DeviceDescription::total_bytes.
  DeviceMemoryCollector(const mq::serve::BackendPlugin* plugin, uint64_t total_bytes)
      : plugin_(plugin), total_bytes_(total_bytes) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const mq::serve::BackendPlugin* plugin_;
  uint64_t total_bytes_;
};

}  // namespace mq::worker
