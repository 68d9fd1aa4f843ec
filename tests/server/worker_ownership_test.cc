// Worker identity bindings survive a server restart: the bindings are in the server's SQLite
// database, so after the database is closed and opened again (what a restart does) another
// identity claiming a bound worker id is still refused, and the owner still gets in.
#include "worker_ownership.h"

#include <memory>

#include <gtest/gtest.h>

#include "schema_migrations.h"
#include "sqlite_db.h"
#include "test_support.h"
#include "worker_store.h"

namespace mq::server {
namespace {

// One server lifetime: the database opened and migrated, the store, the ownership table.
struct ServerState {
  explicit ServerState(const std::string& path, bool enabled = true) {
    auto opened = SqliteDb::Open(path);
    EXPECT_TRUE(opened.ok()) << opened.status();
    db = std::move(*opened);
    EXPECT_TRUE(MigrateSchema(*db).ok());
    store = std::make_unique<WorkerStore>(db.get());
    owners = std::make_unique<WorkerOwnership>(enabled, store.get());
  }
  std::unique_ptr<SqliteDb> db;
  std::unique_ptr<WorkerStore> store;
  std::unique_ptr<WorkerOwnership> owners;
};

TEST(WorkerOwnership, BindingsSurviveARestart) {
  test::TempDir dir;
  const std::string path = dir.Sub("mq.db");
  {
    ServerState s(path);
    ASSERT_TRUE(s.owners->Claim("w-aaaa", "worker-a").ok());
    ASSERT_TRUE(s.owners->Claim("w-bbbb", "worker-b").ok());
    EXPECT_EQ(s.owners->Claim("w-aaaa", "worker-b").code(), absl::StatusCode::kPermissionDenied);
  }
  ServerState s(path);  // restarted
  EXPECT_EQ(s.owners->Claim("w-aaaa", "worker-b").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.owners->Claim("w-bbbb", "worker-a").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_TRUE(s.owners->Claim("w-aaaa", "worker-a").ok());
  EXPECT_TRUE(s.owners->Claim("w-bbbb", "worker-b").ok());
  EXPECT_TRUE(s.owners->CheckAnyWorker("worker-a").ok());
  EXPECT_EQ(s.owners->CheckAnyWorker("worker-c").code(), absl::StatusCode::kPermissionDenied);
  // The rows are what the table holds: one per id, the first identity.
  auto stored = s.store->LoadIdentities();
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(*stored, (std::map<std::string, std::string>{{"w-aaaa", "worker-a"}, {"w-bbbb", "worker-b"}}));
}

TEST(WorkerOwnership, DeregisterEndsTheBindingDurably) {
  test::TempDir dir;
  const std::string path = dir.Sub("mq.db");
  {
    ServerState s(path);
    ASSERT_TRUE(s.owners->Claim("w-aaaa", "worker-a").ok());
    s.owners->Forget("w-aaaa");
  }
  ServerState s(path);
  EXPECT_TRUE(s.owners->Claim("w-aaaa", "worker-b").ok());  // free again, now worker-b's
  EXPECT_EQ(s.owners->Claim("w-aaaa", "worker-a").code(), absl::StatusCode::kPermissionDenied);
}

TEST(WorkerOwnership, AnInsecureServerBindsNothing) {
  test::TempDir dir;
  const std::string path = dir.Sub("mq.db");
  {
    ServerState s(path, /*enabled=*/false);
    EXPECT_TRUE(s.owners->Claim("w-aaaa", "worker-a").ok());
    EXPECT_TRUE(s.owners->Claim("w-aaaa", "worker-b").ok());
  }
  ServerState s(path);
  auto stored = s.store->LoadIdentities();
  ASSERT_TRUE(stored.ok());
  EXPECT_TRUE(stored->empty());
  EXPECT_TRUE(s.owners->Claim("w-aaaa", "worker-b").ok());
}

// Two servers on one database (as after a crash and restart while an old handle lingers): the
// database, not the memory, decides who got the id first.
TEST(WorkerOwnership, TheFirstPersistedBindingWins) {
  test::TempDir dir;
  const std::string path = dir.Sub("mq.db");
  ServerState first(path);
  ServerState second(path);
  ASSERT_TRUE(first.owners->Claim("w-aaaa", "worker-a").ok());
  EXPECT_EQ(second.owners->Claim("w-aaaa", "worker-b").code(), absl::StatusCode::kPermissionDenied);
}

TEST(WorkerOwnership, CallsWithoutAnIdentityAreRefused) {
  test::TempDir dir;
  ServerState s(dir.Sub("mq.db"));
  EXPECT_EQ(s.owners->Claim("w-aaaa", "").code(), absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(s.owners->CheckAnyWorker("").code(), absl::StatusCode::kPermissionDenied);
}

}  // namespace
}  // namespace mq::server
