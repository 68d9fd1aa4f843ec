#include "process_collector.h"

#include <unistd.h>

#include <cstdint>
#include <fstream>

namespace mq {

std::vector<prometheus::MetricFamily> ProcessCollector::Collect() const {
  // statm: size resident shared text lib data dt, in pages.
  std::ifstream statm("/proc/self/statm");
  uint64_t size_pages = 0, resident_pages = 0;
  const long page = ::sysconf(_SC_PAGESIZE);
  // Unreadable (not Linux, /proc not mounted): the family is left out rather than reported as 0.
  if (!(statm >> size_pages >> resident_pages) || page <= 0) return {};
  prometheus::MetricFamily f{"process_resident_memory_bytes", "Resident memory size in bytes",
                             prometheus::MetricType::Gauge, {}};
  prometheus::ClientMetric m;
  m.gauge.value = static_cast<double>(resident_pages) * static_cast<double>(page);
  f.metric.push_back(std::move(m));
  return {std::move(f)};
}

}  // namespace mq
