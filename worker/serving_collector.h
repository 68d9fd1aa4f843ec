// Serving state of this worker read at scrape time from the ModelHost (so a scrape never sees a
// stale copy): per model the sequences running and waiting and the free state slots, plus the
// loaded models and the bytes they hold.
#pragma once

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace mq::worker {

class ModelHost;

class ServingCollector : public prometheus::Collectable {
 public:
  explicit ServingCollector(const ModelHost* host) : host_(host) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  const ModelHost* host_;
};

}  // namespace mq::worker
