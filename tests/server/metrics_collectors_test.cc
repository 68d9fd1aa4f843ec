// The scrape-time collectors: RegistryCollector (server), DeviceMemoryCollector (worker) and
// ProcessCollector (both). Each value is checked against what the test put there or reads itself.
#include <fstream>
#include <string>

#include <gtest/gtest.h>

#include "blob_store.h"
#include "device_memory_collector.h"
#include "process_collector.h"
#include "registry_collector.h"
#include "registry_store.h"
#include "schema_migrations.h"
#include "sqlite_db.h"
#include "test_support.h"

namespace mq {
namespace {

// The value of the family `name` (with label `label`=`value` when given); -1 when absent.
double Value(const std::vector<prometheus::MetricFamily>& families, const std::string& name,
             const std::string& label = "", const std::string& value = "") {
  for (const auto& f : families) {
    if (f.name != name) continue;
    for (const auto& m : f.metric) {
      if (label.empty() || (m.label.size() == 1 && m.label[0].name == label && m.label[0].value == value)) {
        return m.gauge.value;
      }
    }
  }
  return -1;
}

TEST(RegistryCollectorTest, CountsVersionsByKindAndBlobBytes) {
  test::TempDir dir;
  auto db = *server::SqliteDb::Open(dir.Sub("mq.db"));
  ASSERT_TRUE(server::MigrateSchema(*db).ok());
  auto blobs = *server::BlobStore::Open(dir.Sub("blobs"));
  server::RegistryStore store(db.get());
  server::RegistryCollector collector(db.get(), blobs.get());
  auto empty = collector.Collect();
  EXPECT_EQ(Value(empty, "mq_registry_artifacts", "kind", "model"), 0);
  EXPECT_EQ(Value(empty, "mq_registry_artifacts", "kind", "dataset"), 0);
  EXPECT_EQ(Value(empty, "mq_registry_stored_bytes"), 0);

  const std::string a = "first blob", b = "the second, longer blob";
  std::string digest = *blobs->Put(a);
  ASSERT_TRUE(blobs->Put(b).ok());
  ASSERT_TRUE(blobs->Put(a).ok());  // the same content again is one blob
  auto add = [&](mambaquant::v1::ArtifactKind kind, const std::string& name) {
    mambaquant::v1::Artifact art;
    art.set_kind(kind);
    art.set_name(name);
    auto* f = art.add_files();
    f->set_path("f");
    f->set_size(static_cast<int64_t>(a.size()));
    f->set_sha256(digest);
    ASSERT_TRUE(db->Transaction([&](server::SqliteTx& tx) { return store.InsertTx(tx, art).status(); }).ok());
  };
  add(mambaquant::v1::ARTIFACT_KIND_MODEL, "m");
  add(mambaquant::v1::ARTIFACT_KIND_MODEL, "m");  // version 2
  add(mambaquant::v1::ARTIFACT_KIND_MODEL, "n");
  add(mambaquant::v1::ARTIFACT_KIND_DATASET, "d");
  auto full = collector.Collect();
  EXPECT_EQ(Value(full, "mq_registry_artifacts", "kind", "model"), 3);
  EXPECT_EQ(Value(full, "mq_registry_artifacts", "kind", "dataset"), 1);
  EXPECT_EQ(Value(full, "mq_registry_stored_bytes"), static_cast<double>(a.size() + b.size()));
}

uint64_t used_bytes = 0;
uint64_t DeviceMemoryUsed() { return used_bytes; }

TEST(DeviceMemoryCollectorTest, ReportsThePluginsFiguresAtScrapeTime) {
  serve::BackendPlugin plugin{};
  plugin.device_memory_used = DeviceMemoryUsed;
  worker::DeviceMemoryCollector collector(&plugin, 80ull << 30);
  used_bytes = 123456789;
  EXPECT_EQ(Value(collector.Collect(), "mq_worker_gpu_memory_used_bytes"), 123456789.0);
  used_bytes = 987654321;  // read again at the next scrape, not cached
  auto families = collector.Collect();
  EXPECT_EQ(Value(families, "mq_worker_gpu_memory_used_bytes"), 987654321.0);
  EXPECT_EQ(Value(families, "mq_worker_gpu_memory_total_bytes"), static_cast<double>(80ull << 30));
  // A plugin without the entry point: total only, no made-up used figure.
  serve::BackendPlugin bare{};
  auto only_total = worker::DeviceMemoryCollector(&bare, 1000).Collect();
  EXPECT_EQ(Value(only_total, "mq_worker_gpu_memory_used_bytes"), -1);
  EXPECT_EQ(Value(only_total, "mq_worker_gpu_memory_total_bytes"), 1000);
  EXPECT_TRUE(worker::DeviceMemoryCollector(nullptr, 0).Collect().empty());
}

TEST(ProcessCollectorTest, ResidentMemoryMatchesProcStatus) {
  const double rss = Value(ProcessCollector().Collect(), "process_resident_memory_bytes");
  // VmRSS (kB) from /proc/self/status, a second reading of the same figure.
  std::ifstream status("/proc/self/status");
  std::string key;
  double vm_rss_kb = -1;
  while (status >> key) {
    if (key == "VmRSS:") { status >> vm_rss_kb; break; }
  }
  ASSERT_GT(vm_rss_kb, 0);
  EXPECT_GT(rss, vm_rss_kb * 1024 * 0.9);
  EXPECT_LT(rss, vm_rss_kb * 1024 * 1.1);
}

}  // namespace
}  // namespace mq
