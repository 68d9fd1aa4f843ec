// Registry defects found by testing as an attacker would, each fixed: list pages (artifacts and
// jobs) bounded by bytes,
// version numbers capped at their documented range, CommitUpload idempotent on retry, blobs
// left by rejected or aborted uploads collected after a grace period, and a blob corrupted on disk
// repaired by the next upload of its bytes (not deduplicated into one more unreadable version), and
// a deleted version's number never given to other content (and an explicit number below the highest
// refused with a message that says so truly), and concurrent commits of one upload making one version.
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "blob_store.h"
#include "job_store.h"
#include "registry.h"
#include "registry_store.h"
#include "schema_migrations.h"
#include "sha256.h"
#include "test_support.h"
#include "upload_manager.h"

namespace mq::server {
namespace {

using mambaquant::v1::Artifact;
using mambaquant::v1::ARTIFACT_KIND_DATASET;
using mambaquant::v1::CreateUploadRequest;

// Rewrites a file in place (a blob "rotting" on disk).
void Overwrite(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out.good()) << path;
  out << bytes;
}

class RegistryDefects : public ::testing::Test {
 protected:
  void SetUp() override {
    auto db = SqliteDb::Open(dir_.Sub("mq.db"));
    ASSERT_TRUE(db.ok()) << db.status();
    db_ = *std::move(db);
    ASSERT_TRUE(MigrateSchema(*db_).ok());
    auto blobs = BlobStore::Open(dir_.path());
    ASSERT_TRUE(blobs.ok()) << blobs.status();
    blobs_ = *std::move(blobs);
    store_ = std::make_unique<RegistryStore>(db_.get());
    uploads_ = std::make_unique<UploadManager>(store_.get(), blobs_.get(), UploadLimits());
    registry_ = std::make_unique<Registry>(store_.get(), blobs_.get(), uploads_.get(), nullptr);
  }

  absl::StatusOr<Artifact> Insert(const std::string& name, int64_t version, const std::string& description = "") {
    Artifact a;
    a.set_kind(ARTIFACT_KIND_DATASET);
    a.set_name(name);
    a.set_version(version);
    a.set_description(description);
    absl::StatusOr<Artifact> out;
    absl::Status s = db_->Transaction([&](SqliteTx& tx) -> absl::Status {
      out = store_->InsertTx(tx, a);
      return out.status();
    });
    if (!s.ok()) return s;
    return out;
  }

  // The manifest of a one-file text dataset.
  static CreateUploadRequest DatasetRequest(const std::string& name, const std::string& text) {
    CreateUploadRequest req;
    req.set_kind(ARTIFACT_KIND_DATASET);
    req.set_name(name);
    auto* f = req.add_files();
    f->set_path("data.txt");
    f->set_size(text.size());
    f->set_sha256(Sha256Hex(text));
    return req;
  }

  // An upload of a one-file text dataset whose bytes are already in the blob store.
  absl::StatusOr<std::string> UploadDataset(const std::string& name, const std::string& text) {
    auto digest = blobs_->Put(text);
    if (!digest.ok()) return digest.status();
    auto upload = uploads_->Create(DatasetRequest(name, text), "", absl::Now());
    if (!upload.ok()) return upload.status();
    return upload->upload_id();
  }

  test::TempDir dir_;
  std::unique_ptr<SqliteDb> db_;
  std::unique_ptr<BlobStore> blobs_;
  std::unique_ptr<RegistryStore> store_;
  std::unique_ptr<UploadManager> uploads_;
  std::unique_ptr<Registry> registry_;
};

TEST_F(RegistryDefects, ListPagesAreBoundedByBytes) {
  // 40 artifacts of ~300 KB metadata each: 12 MB, past the 8 MiB message limit in one page.
  const std::string big(300 * 1024, 'd');
  for (int i = 0; i < 40; ++i) ASSERT_TRUE(Insert(absl::StrCat("ds", i), 1, big).ok());
  std::set<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    auto page = store_->List(ARTIFACT_KIND_DATASET, "", 1000, token);
    ASSERT_TRUE(page.ok()) << page.status();
    ASSERT_FALSE(page->artifacts.empty());
    size_t bytes = 0;
    for (const Artifact& a : page->artifacts) {
      bytes += a.ByteSizeLong();
      EXPECT_TRUE(seen.insert(a.name()).second) << a.name() << " listed twice";
    }
    EXPECT_LE(bytes, kMaxListPageBytes);
    token = page->next_page_token;
    ++pages;
  } while (!token.empty() && pages < 100);
  EXPECT_EQ(seen.size(), 40u);
  // 4 MiB / (300 KiB + a few bytes of name and tags) = 13 per page: 13 + 13 + 13 + 1.
  EXPECT_EQ(pages, 4);
}

// A page token continues the listing it came from only: used with another kind or name it once
// silently skipped entries; now INVALID_ARGUMENT.
TEST_F(RegistryDefects, PageTokensBelongToTheirListing) {
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(Insert("same", 0).ok());
  auto first = store_->List(ARTIFACT_KIND_DATASET, "same", 2, "");
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_FALSE(first->next_page_token.empty());
  const std::string token = first->next_page_token;
  auto next = store_->List(ARTIFACT_KIND_DATASET, "same", 2, token);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->artifacts.size(), 2u);
  EXPECT_EQ(next->artifacts[0].version(), 3);
  for (const auto& [kind, name] : {std::pair{mambaquant::v1::ARTIFACT_KIND_MODEL, std::string("same")},
                                   std::pair{ARTIFACT_KIND_DATASET, std::string("")},
                                   std::pair{ARTIFACT_KIND_DATASET, std::string("other")}}) {
    auto wrong = store_->List(kind, name, 2, token);
    EXPECT_EQ(wrong.status().code(), absl::StatusCode::kInvalidArgument) << name;
    EXPECT_NE(wrong.status().message().find("another listing"), std::string::npos) << wrong.status();
  }
  for (const char* bad : {"a5", "x5.abc", "a-1.abc", "a.abc"})
    EXPECT_EQ(store_->List(ARTIFACT_KIND_DATASET, "same", 2, bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
}

TEST_F(RegistryDefects, JobListPagesAreBoundedByBytes) {
  JobStore jobs(db_.get());
  mambaquant::v1::QuantSpec spec;
  spec.set_model(std::string(300 * 1024, 'm'));  // the store takes what it is given: 300 KB a job
  spec.set_calib_dataset("c:1");
  for (int i = 0; i < 20; ++i) ASSERT_TRUE(jobs.Create(spec, "m", 1000, absl::Now()).ok());
  JobListFilter filter;
  filter.page_size = 1000;
  std::set<std::string> seen;
  int pages = 0;
  do {
    auto page = jobs.List(filter);
    ASSERT_TRUE(page.ok()) << page.status();
    size_t bytes = 0;
    for (const auto& j : page->jobs) {
      bytes += j.ByteSizeLong();
      EXPECT_TRUE(seen.insert(j.id()).second);
    }
    EXPECT_LE(bytes, kMaxListPageBytes);
    filter.page_token = page->next_page_token;
    ++pages;
  } while (!filter.page_token.empty() && pages < 100);
  EXPECT_EQ(seen.size(), 20u);
  EXPECT_EQ(pages, 2);  // 13 (4 MiB / 300 KiB) + 7
}

TEST_F(RegistryDefects, VersionsStopAtTheirDocumentedRange) {
  ASSERT_TRUE(Insert("v", kMaxVersion - 1).ok());
  auto last = Insert("v", 0);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(last->version(), kMaxVersion);
  auto past = Insert("v", 0);
  EXPECT_EQ(past.status().code(), absl::StatusCode::kResourceExhausted) << past.status();
  EXPECT_NE(past.status().message().find("2147483647"), std::string::npos);
  EXPECT_EQ(Insert("w", kMaxVersion + 1).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Insert("w", -1).status().code(), absl::StatusCode::kInvalidArgument);
  // Other names are unaffected.
  auto other = Insert("w", 0);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->version(), 1);
}

// Deleting the latest version and uploading again once gave the new content the deleted number:
// a job's source_model "v:2" then named other bytes. Numbers now only grow.
TEST_F(RegistryDefects, DeletedVersionNumbersAreNeverReused) {
  ASSERT_TRUE(Insert("v", 0).ok());
  ASSERT_TRUE(Insert("v", 0).ok());
  ASSERT_TRUE(registry_->Delete(ARTIFACT_KIND_DATASET, "v:2", nullptr).ok());
  auto next = Insert("v", 0);
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(next->version(), 3);
  // Every version deleted: the name still continues from its highest.
  ASSERT_TRUE(registry_->Delete(ARTIFACT_KIND_DATASET, "v:1", nullptr).ok());
  ASSERT_TRUE(registry_->Delete(ARTIFACT_KIND_DATASET, "v:3", nullptr).ok());
  auto after = Insert("v", 0);
  ASSERT_TRUE(after.ok()) << after.status();
  EXPECT_EQ(after->version(), 4);
  // Asking for a deleted number explicitly is refused and says which comes next; a number above
  // every one given is allowed, and counting goes on from it.
  auto again = Insert("v", 2);
  EXPECT_EQ(again.status().code(), absl::StatusCode::kAlreadyExists) << again.status();
  EXPECT_NE(again.status().message().find("versions only increase, the next version of v is 5"), std::string::npos)
      << again.status();
  EXPECT_EQ(Insert("v", 4).status().code(), absl::StatusCode::kAlreadyExists);  // exists
  ASSERT_TRUE(Insert("v", 9).ok());
  EXPECT_EQ(Insert("v", 0)->version(), 10);
  // The same name of the other kind has its own numbers.
  Artifact m;
  m.set_kind(mambaquant::v1::ARTIFACT_KIND_MODEL);
  m.set_name("v");
  absl::StatusOr<Artifact> model;
  ASSERT_TRUE(db_->Transaction([&](SqliteTx& tx) -> absl::Status {
                 model = store_->InsertTx(tx, m);
                 return model.status();
               }).ok());
  EXPECT_EQ(model->version(), 1);
}

// A database made before the version memory existed (schema 3) learns each name's highest
// version from its artifacts and committed uploads when it migrates.
TEST(RegistryMigration, HighestVersionsAreBackfilled) {
  test::TempDir dir;
  auto db = SqliteDb::Open(dir.Sub("mq.db"));
  ASSERT_TRUE(db.ok());
  std::vector<Migration> v3(SchemaMigrations().begin(), SchemaMigrations().begin() + 3);
  ASSERT_EQ(v3.back().version, 3);
  ASSERT_TRUE(MigrateSchema(**db, v3).ok());
  ASSERT_TRUE((*db)->Transaction([&](SqliteTx& tx) -> absl::Status {
                for (const char* sql :
                     {"INSERT INTO artifacts (kind, name, version, artifact, create_time_ms) VALUES (2, 'd', 1, x'', 0)",
                      "INSERT INTO artifacts (kind, name, version, artifact, create_time_ms) VALUES (2, 'd', 3, x'', 0)",
                      "INSERT INTO committed_uploads (upload_id, kind, name, version, commit_time_ms) VALUES ('u1', 2, 'e', 7, 0)"}) {
                  auto st = tx.Prepare(sql);
                  if (!st.ok()) return st.status();
                  absl::Status s = st->Run();
                  if (!s.ok()) return s;
                }
                return absl::OkStatus();
              }).ok());
  ASSERT_TRUE(MigrateSchema(**db).ok());
  RegistryStore store(db->get());
  for (const auto& [name, want] : {std::pair<const char*, int64_t>{"d", 4}, {"e", 8}, {"f", 1}}) {
    Artifact a;
    a.set_kind(ARTIFACT_KIND_DATASET);
    a.set_name(name);
    absl::StatusOr<Artifact> out;
    ASSERT_TRUE((*db)->Transaction([&](SqliteTx& tx) -> absl::Status {
                   out = store.InsertTx(tx, a);
                   return out.status();
                 }).ok());
    EXPECT_EQ(out->version(), want) << name;
  }
}

TEST_F(RegistryDefects, CommitUploadRetriedAfterItTookEffectAnswersTheSameVersion) {
  auto id = UploadDataset("retry", "some text\n");
  ASSERT_TRUE(id.ok()) << id.status();
  auto first = registry_->CommitUpload(*id, absl::Now());
  ASSERT_TRUE(first.ok()) << first.status();
  auto again = registry_->CommitUpload(*id, absl::Now());
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(again->name(), "retry");
  EXPECT_EQ(again->version(), first->version());
  EXPECT_EQ(again->files(0).sha256(), Sha256Hex("some text\n"));
  // Exactly one version exists.
  auto page = store_->List(ARTIFACT_KIND_DATASET, "retry", 10, "");
  ASSERT_TRUE(page.ok());
  EXPECT_EQ(page->artifacts.size(), 1u);
  // Once that version is deleted, the retry is NOT_FOUND (nothing is re-created).
  ASSERT_TRUE(registry_->Delete(ARTIFACT_KIND_DATASET, absl::StrCat("retry:", first->version()), nullptr).ok());
  EXPECT_EQ(registry_->CommitUpload(*id, absl::Now()).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(registry_->CommitUpload("u-0000000000000000", absl::Now()).status().code(), absl::StatusCode::kNotFound);
}

// Concurrent commits of one upload (mqctl --resume while the first commit runs, a worker's FinishJob
// retried past its deadline) once let the losers insert a second version and then fail on the
// committed-upload record with SQLite's text ("UNIQUE constraint failed"). Every one now answers the
// version the winner made, and runs its after_insert hook with it (FinishJob learns the job state).
TEST_F(RegistryDefects, ConcurrentCommitsOfOneUploadAllAnswerTheSameVersion) {
  constexpr int kThreads = 8;
  for (int round = 0; round < 10; ++round) {
    const std::string name = absl::StrCat("race", round);
    auto id = UploadDataset(name, absl::StrCat("text of round ", round, "\n"));
    ASSERT_TRUE(id.ok()) << id.status();
    std::atomic<int> ready{0};
    std::vector<absl::StatusOr<Artifact>> results(kThreads, absl::UnknownError("not run"));
    std::vector<int64_t> hooked(kThreads, -1);
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; ++t) {
      threads.emplace_back([&, t] {
        Registry::CommitHooks hooks;
        hooks.after_insert = [&hooked, t](SqliteTx&, const Artifact& stored) {
          hooked[t] = stored.version();
          return absl::OkStatus();
        };
        ready.fetch_add(1);
        while (ready.load() < kThreads) {
        }
        results[t] = registry_->CommitUpload(*id, absl::Now(), hooks);
      });
    }
    for (auto& th : threads) th.join();
    for (int t = 0; t < kThreads; ++t) {
      ASSERT_TRUE(results[t].ok()) << "round " << round << " thread " << t << ": " << results[t].status();
      EXPECT_EQ(results[t]->version(), 1) << name;
      EXPECT_EQ(hooked[t], 1) << name;
    }
    auto page = store_->List(ARTIFACT_KIND_DATASET, name, 10, "");
    ASSERT_TRUE(page.ok());
    EXPECT_EQ(page->artifacts.size(), 1u) << name;
  }
}

// An explicit version below the name's highest that never existed was refused as one that
// "existed and was deleted". The rule stays (versions only increase); the message is true for both.
TEST_F(RegistryDefects, AnExplicitVersionBelowTheHighestIsRefusedWithATrueMessage) {
  ASSERT_TRUE(Insert("w", 5).ok());
  auto skipped = Insert("w", 3);  // never existed
  EXPECT_EQ(skipped.status().code(), absl::StatusCode::kAlreadyExists) << skipped.status();
  EXPECT_EQ(std::string(skipped.status().message()), "dataset w:3 cannot be created: versions only increase, the next version of w is 6");
  ASSERT_TRUE(registry_->Delete(ARTIFACT_KIND_DATASET, "w:5", nullptr).ok());
  auto deleted = Insert("w", 5);  // existed and was deleted: the same rule, the same message
  EXPECT_EQ(deleted.status().code(), absl::StatusCode::kAlreadyExists) << deleted.status();
  EXPECT_EQ(std::string(deleted.status().message()), "dataset w:5 cannot be created: versions only increase, the next version of w is 6");
  // CreateUpload says the same before any byte is sent (it was said only at the commit).
  CreateUploadRequest below = DatasetRequest("w", "text\n");
  below.set_version(4);
  auto refused = uploads_->Create(below, "", absl::Now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists) << refused.status();
  EXPECT_EQ(std::string(refused.status().message()), "dataset w:4 cannot be created: versions only increase, the next version of w is 6");
  below.set_version(6);
  EXPECT_TRUE(uploads_->Create(below, "", absl::Now()).ok());
}

// A name at the last version there is: a new upload under it is refused before its bytes are sent.
TEST_F(RegistryDefects, ANameWithNoVersionLeftIsRefusedAtCreateUpload) {
  ASSERT_TRUE(Insert("full", 2147483647).ok());
  auto refused = uploads_->Create(DatasetRequest("full", "text\n"), "", absl::Now());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_NE(refused.status().message().find("has reached version 2147483647"), absl::string_view::npos) << refused.status();
  EXPECT_TRUE(uploads_->Create(DatasetRequest("other", "text\n"), "", absl::Now()).ok());
}

TEST_F(RegistryDefects, UploadOfContentWhoseBlobRottedSendsTheBytesAgainAndRepairsIt) {
  const std::string text = "hello registry\n";
  auto id = UploadDataset("rot", text);
  ASSERT_TRUE(id.ok()) << id.status();
  auto v1 = registry_->CommitUpload(*id, absl::Now());
  ASSERT_TRUE(v1.ok()) << v1.status();
  const std::string digest = Sha256Hex(text);
  ASSERT_TRUE(blobs_->VerifyBlob(digest).ok());
  // One byte flips on disk; the size stays the same.
  {
    std::string bytes = test::ReadFileOrDie(blobs_->BlobPath(digest));
    bytes[3] ^= 0x20;
    Overwrite(blobs_->BlobPath(digest), bytes);
  }
  EXPECT_EQ(blobs_->VerifyBlob(digest).code(), absl::StatusCode::kDataLoss);
  // A new upload of the same content: the bad blob is moved aside, the file is not complete.
  auto upload = uploads_->Create(DatasetRequest("rot", text), "", absl::Now());
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_EQ(upload->files_size(), 1);
  EXPECT_FALSE(upload->files(0).complete());
  EXPECT_EQ(upload->files(0).committed_bytes(), 0u);
  EXPECT_FALSE(blobs_->Contains(digest));
  // The quarantined bytes are kept for inspection, out of the store.
  int quarantined = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir_.path() + "/quarantine")) {
    EXPECT_EQ(e.path().filename().string().rfind(digest + ".", 0), 0u);
    ++quarantined;
  }
  EXPECT_EQ(quarantined, 1);
  // Sending the bytes reinstalls the blob; the first version reads correctly again.
  auto record = uploads_->GetRecord(upload->upload_id());
  ASSERT_TRUE(record.ok());
  mambaquant::v1::UploadChunk chunk;
  chunk.set_upload_id(upload->upload_id());
  chunk.set_path("data.txt");
  chunk.set_offset(0);
  chunk.set_data(text);
  auto st = uploads_->WriteChunk(*record, chunk);
  ASSERT_TRUE(st.ok()) << st.status();
  EXPECT_TRUE(st->complete());
  EXPECT_TRUE(blobs_->VerifyBlob(digest).ok());
  EXPECT_EQ(test::ReadFileOrDie(blobs_->BlobPath(digest)), text);
  // BlobStore::Put repairs the same way.
  {
    std::string bytes = test::ReadFileOrDie(blobs_->BlobPath(digest));
    bytes[0] ^= 0x01;
    Overwrite(blobs_->BlobPath(digest), bytes);
  }
  auto put = blobs_->Put(text);
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(test::ReadFileOrDie(blobs_->BlobPath(digest)), text);
}

TEST_F(RegistryDefects, BlobsOfAbortedAndRejectedUploadsAreCollectedAfterTheGracePeriod) {
  auto kept_id = UploadDataset("kept", "registered text\n");
  ASSERT_TRUE(kept_id.ok());
  ASSERT_TRUE(registry_->CommitUpload(*kept_id, absl::Now()).ok());
  auto open_id = UploadDataset("open", "in flight\n");     // an upload still open
  auto aborted_id = UploadDataset("aborted", "aborted\n");  // aborted below
  auto rejected_id = UploadDataset("rejected", std::string("\xff\xfe not utf-8", 13));
  ASSERT_TRUE(open_id.ok() && aborted_id.ok() && rejected_id.ok());
  ASSERT_TRUE(uploads_->Abort(*aborted_id).ok());
  // Commit refuses the non-UTF-8 dataset; the client then gives up and aborts.
  EXPECT_EQ(registry_->CommitUpload(*rejected_id, absl::Now()).status().code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(uploads_->Abort(*rejected_id).ok());
  auto stray = blobs_->Put("no upload ever named this\n");
  ASSERT_TRUE(stray.ok());

  // Within the grace period nothing goes, referenced or not.
  auto removed = registry_->CollectUnreferencedBlobs(absl::Now(), absl::Hours(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 0);
  EXPECT_TRUE(blobs_->Contains(Sha256Hex("aborted\n")));
  // Past it: the aborted, rejected and stray blobs go; the registered and in-flight ones stay.
  removed = registry_->CollectUnreferencedBlobs(absl::Now() + absl::Hours(2), absl::Hours(1));
  ASSERT_TRUE(removed.ok()) << removed.status();
  EXPECT_EQ(*removed, 3);
  EXPECT_FALSE(blobs_->Contains(Sha256Hex("aborted\n")));
  EXPECT_FALSE(blobs_->Contains(Sha256Hex(std::string("\xff\xfe not utf-8", 13))));
  EXPECT_FALSE(blobs_->Contains(*stray));
  EXPECT_TRUE(blobs_->Contains(Sha256Hex("registered text\n")));
  EXPECT_TRUE(blobs_->Contains(Sha256Hex("in flight\n")));
  auto listed = blobs_->ListBlobs();
  ASSERT_TRUE(listed.ok());
  EXPECT_EQ(listed->size(), 2u);
  // The open upload still commits.
  EXPECT_TRUE(registry_->CommitUpload(*open_id, absl::Now()).ok());
}

}  // namespace
}  // namespace mq::server
