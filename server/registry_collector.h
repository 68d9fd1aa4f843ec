// Registry contents read at scrape time (so a scrape never sees a stale copy): artifact versions
// by kind from the database and the bytes of the complete blobs on disk (what the data dir holds,
// blobs awaiting garbage collection included).
#pragma once

#include <vector>

#include <prometheus/collectable.h>
#include <prometheus/metric_family.h>

namespace mq::server {

class BlobStore;
class SqliteDb;

class RegistryCollector : public prometheus::Collectable {
 public:
  RegistryCollector(SqliteDb* db, const BlobStore* blobs) : db_(db), blobs_(blobs) {}
  std::vector<prometheus::MetricFamily> Collect() const override;

 private:
  SqliteDb* db_;
  const BlobStore* blobs_;
};

}  // namespace mq::server
