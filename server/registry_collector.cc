#include "registry_collector.h"

#include <cstdint>
#include <map>
#include <string>

#include "blob_store.h"
#include "log.h"
#include "mambaquant/v1/common.pb.h"
#include "sqlite_db.h"

namespace mq::server {
namespace {

prometheus::ClientMetric Value(double v) {
  prometheus::ClientMetric m;
  m.gauge.value = v;
  return m;
}

}  // namespace

std::vector<prometheus::MetricFamily> RegistryCollector::Collect() const {
  std::vector<prometheus::MetricFamily> out;
  std::map<int64_t, int64_t> by_kind;
  absl::Status s = db_->Read([&](SqliteTx& tx) -> absl::Status {
    auto stmt = tx.Prepare("SELECT kind, COUNT(*) FROM artifacts GROUP BY kind");
    if (!stmt.ok()) return stmt.status();
    for (;;) {
      auto row = stmt->Step();
      if (!row.ok()) return row.status();
      if (!*row) return absl::OkStatus();
      by_kind[stmt->Int(0)] = stmt->Int(1);
    }
  });
  // A failed read leaves the family out of this scrape (absent, not a false zero).
  if (s.ok()) {
    prometheus::MetricFamily f{"mq_registry_artifacts", "Artifact versions in the registry, by kind",
                               prometheus::MetricType::Gauge, {}};
    for (auto [kind, name] : {std::pair{mambaquant::v1::ARTIFACT_KIND_MODEL, "model"},
                              std::pair{mambaquant::v1::ARTIFACT_KIND_DATASET, "dataset"}}) {
      auto m = Value(static_cast<double>(by_kind[kind]));
      m.label.push_back({"kind", name});
      f.metric.push_back(std::move(m));
    }
    out.push_back(std::move(f));
  } else {
    Log(LogLevel::kWarning, "registry metrics: counting artifacts failed").Kv("error", s);
  }
  auto blobs = blobs_->ListBlobs();
  if (blobs.ok()) {
    uint64_t bytes = 0;
    for (const auto& b : *blobs) {
      auto size = blobs_->BlobSize(b.sha256);
      if (size.ok()) bytes += *size;  // one removed meanwhile by garbage collection is not counted
    }
    prometheus::MetricFamily f{"mq_registry_stored_bytes", "Bytes of the complete blobs in the blob store",
                               prometheus::MetricType::Gauge, {}};
    f.metric.push_back(Value(static_cast<double>(bytes)));
    out.push_back(std::move(f));
  } else {
    Log(LogLevel::kWarning, "registry metrics: listing blobs failed").Kv("error", blobs.status());
  }
  return out;
}

}  // namespace mq::server
