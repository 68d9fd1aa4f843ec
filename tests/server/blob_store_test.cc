#include "blob_store.h"

#include <sys/stat.h>

#include <gtest/gtest.h>

#include "artifact_validation.h"
#include "sha256.h"
#include "test_support.h"

namespace mq::server {
namespace {

TEST(BlobStore, PutStoresUnderFannedOutDigestPath) {
  test::TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto digest = (*store)->Put("hello");
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(*digest, Sha256Hex("hello"));
  EXPECT_EQ((*store)->BlobPath(*digest),
            dir.path() + "/blobs/sha256/" + digest->substr(0, 2) + "/" + digest->substr(2, 2) + "/" + *digest);
  EXPECT_EQ(test::ReadFileOrDie((*store)->BlobPath(*digest)), "hello");
  EXPECT_EQ(*(*store)->BlobSize(*digest), 5u);
}

TEST(BlobStore, PartialBlobIsInvisibleUntilCommitted) {
  test::TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  const std::string data = "0123456789";
  const std::string digest = Sha256Hex(data);
  auto partial = (*store)->OpenPartial("u1-0");
  ASSERT_TRUE(partial.ok());
  ASSERT_TRUE((*partial)->Append(0, data.data(), 4).ok());
  EXPECT_FALSE((*store)->Contains(digest));
  ASSERT_TRUE((*partial)->Append(4, data.data() + 4, 6).ok());
  EXPECT_FALSE((*store)->Contains(digest));
  ASSERT_TRUE((*partial)->Commit(10, digest).ok());
  EXPECT_TRUE((*store)->Contains(digest));
  EXPECT_EQ(test::ReadFileOrDie((*store)->BlobPath(digest)), data);
  // The partial file was renamed, not copied.
  struct stat st;
  EXPECT_NE(::stat((dir.path() + "/partial/u1-0").c_str(), &st), 0);
}

TEST(BlobStore, AppendAtWrongOffsetIsRefusedAndChangesNothing) {
  test::TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto partial = (*store)->OpenPartial("u2-0");
  ASSERT_TRUE(partial.ok());
  ASSERT_TRUE((*partial)->Append(0, "abc", 3).ok());
  absl::Status s = (*partial)->Append(5, "zz", 2);
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ((*partial)->size(), 3u);
}

TEST(BlobStore, DigestMismatchDiscardsBytesAndInstallsNothing) {
  test::TempDir dir;
  auto store = BlobStore::Open(dir.path());
  ASSERT_TRUE(store.ok());
  auto partial = (*store)->OpenPartial("u3-0");
  ASSERT_TRUE(partial.ok());
  ASSERT_TRUE((*partial)->Append(0, "corrupt", 7).ok());
  const std::string claimed = Sha256Hex("correct");
  absl::Status s = (*partial)->Commit(7, claimed);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE((*store)->Contains(claimed));
  EXPECT_FALSE((*store)->Contains(Sha256Hex("corrupt")));
  EXPECT_EQ((*partial)->size(), 0u);
  // After discarding, the right bytes complete it.
  ASSERT_TRUE((*partial)->Append(0, "correct", 7).ok());
  EXPECT_TRUE((*partial)->Commit(7, claimed).ok());
  EXPECT_TRUE((*store)->Contains(claimed));
}

TEST(BlobStore, ReopenedPartialResumesWithItsDigestState) {
  test::TempDir dir;
  const std::string data = "resumable upload content";
  {
    auto store = BlobStore::Open(dir.path());
    auto partial = (*store)->OpenPartial("u4-0");
    ASSERT_TRUE((*partial)->Append(0, data.data(), 10).ok());
  }  // as if the server restarted
  auto store = BlobStore::Open(dir.path());
  auto partial = (*store)->OpenPartial("u4-0");
  ASSERT_TRUE(partial.ok());
  EXPECT_EQ((*partial)->size(), 10u);
  ASSERT_TRUE((*partial)->Append(10, data.data() + 10, data.size() - 10).ok());
  EXPECT_TRUE((*partial)->Commit(data.size(), Sha256Hex(data)).ok());
}

TEST(BlobStore, RejectsMalformedDigestsAndPartialNames) {
  test::TempDir dir;
  auto store = BlobStore::Open(dir.path());
  EXPECT_EQ((*store)->OpenBlob("../../etc/passwd").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->OpenPartial("../x").status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ((*store)->OpenBlob(Sha256Hex("absent")).status().code(), absl::StatusCode::kNotFound);
}

TEST(Utf8Validator, AcceptsUtf8AcrossChunkBoundariesAndRejectsInvalid) {
  Utf8Validator v;
  std::string s = "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80";
  for (char c : s) ASSERT_TRUE(v.Feed(&c, 1));
  EXPECT_TRUE(v.Finish());
  for (std::string bad : {std::string("\xc0\xaf"), std::string("\xed\xa0\x80"), std::string("\xff"), std::string("\x80")}) {
    Utf8Validator w;
    EXPECT_FALSE(w.Feed(bad.data(), bad.size()) && w.Finish()) << bad;
  }
  Utf8Validator truncated;
  EXPECT_TRUE(truncated.Feed("\xe2\x82", 2));
  EXPECT_FALSE(truncated.Finish());
  // The failing byte's index within the data fed (the dataset check adds the chunk's offset).
  Utf8Validator at;
  const std::string text = "hello \xff\xfe";
  EXPECT_FALSE(at.Feed(text.data(), text.size()));
  EXPECT_EQ(at.error_index(), 6u);
  Utf8Validator split;
  EXPECT_TRUE(split.Feed("ab\xe2", 3));
  EXPECT_FALSE(split.Feed("\x82x", 2));
  EXPECT_EQ(split.error_index(), 1u);
}

}  // namespace
}  // namespace mq::server
