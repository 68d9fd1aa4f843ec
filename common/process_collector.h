// The process's resident memory, read from /proc/self/statm at each scrape, under the standard
// name process_resident_memory_bytes (prometheus-cpp 1.0.1 exports no process metrics of its own).
// mq-server and mq-worker both register it.
#pragma once

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace mq {

class ProcessCollector : public prometheus::Collectable {
 public:
  std::vector<prometheus::MetricFamily> Collect() const override;
};

}  // namespace mq
