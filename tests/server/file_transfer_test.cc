// DownloadToFile against scripted streams: what stays in "<dest>.part" after each kind of failure
// decides whether the next attempt can succeed. A stream that ends in DATA_LOSS (the server found
// its copy corrupt after sending it) once left its bytes there, and the retry after the server was
// repaired resumed from them and failed the digest again.
#include "file_transfer.h"

#include <gtest/gtest.h>

#include <deque>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "sha256.h"
#include "test_support.h"

namespace mq {
namespace {

using mambaquant::v1::FileChunk;

// A server-streaming reader that yields `chunks` and then finishes with `status`.
class ScriptedReader : public grpc::ClientReaderInterface<FileChunk> {
 public:
  ScriptedReader(std::deque<FileChunk> chunks, grpc::Status status) : chunks_(std::move(chunks)), status_(std::move(status)) {}
  bool Read(FileChunk* msg) override {
    if (chunks_.empty()) return false;
    *msg = chunks_.front();
    chunks_.pop_front();
    return true;
  }
  grpc::Status Finish() override { return status_; }
  bool NextMessageSize(uint32_t* sz) override {
    *sz = chunks_.empty() ? 0 : static_cast<uint32_t>(chunks_.front().ByteSizeLong());
    return !chunks_.empty();
  }
  void WaitForInitialMetadata() override {}

 private:
  std::deque<FileChunk> chunks_;
  grpc::Status status_;
};

FileChunk Chunk(uint64_t offset, const std::string& data) {
  FileChunk c;
  c.set_offset(offset);
  c.set_data(data);
  return c;
}

std::string Read(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Serves `content` from the requested offset in two chunks; `corrupt` flips its first byte and
// ends the stream with DATA_LOSS, as the server does when the blob fails its digest.
OpenReadStreamFn Server(const std::string& content, const bool* corrupt, int* opens) {
  return [content, corrupt, opens](grpc::ClientContext*, uint64_t offset) -> std::unique_ptr<grpc::ClientReaderInterface<FileChunk>> {
    ++*opens;
    std::string bytes = content;
    if (*corrupt) bytes[0] ^= 0x20;
    const std::string rest = bytes.substr(offset);
    const size_t half = rest.size() / 2;
    std::deque<FileChunk> chunks = {Chunk(offset, rest.substr(0, half)), Chunk(offset + half, rest.substr(half))};
    return std::make_unique<ScriptedReader>(
        std::move(chunks), *corrupt ? grpc::Status(grpc::StatusCode::DATA_LOSS, "blob is corrupt") : grpc::Status::OK);
  };
}

TEST(DownloadToFile, DataLossFromTheServerKeepsNothingAndTheRetryAfterRepairSucceeds) {
  test::TempDir dir;
  const std::string dest = dir.Sub("data.txt"), content = "the stored dataset, long enough for two chunks\n";
  bool corrupt = true;
  int opens = 0;
  auto prepare = [](grpc::ClientContext*) {};
  absl::Status s = DownloadToFile(dest, content.size(), Sha256Hex(content), prepare, Server(content, &corrupt, &opens), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(opens, 1);  // DATA_LOSS is not retried
  EXPECT_FALSE(std::filesystem::exists(dest));
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));  // the corrupt bytes are not kept to resume from
  corrupt = false;  // the server's copy is repaired (uploaded again)
  s = DownloadToFile(dest, content.size(), Sha256Hex(content), prepare, Server(content, &corrupt, &opens), nullptr);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(Read(dest), content);
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));
}

TEST(DownloadToFile, WrongDigestDiscardsThePartAndAFailureBeforeAnyByteLeavesNoPart) {
  test::TempDir dir;
  const std::string dest = dir.Sub("m.bin"), content = "0123456789abcdef";
  bool corrupt = false;
  int opens = 0;
  auto prepare = [](grpc::ClientContext*) {};
  absl::Status s = DownloadToFile(dest, content.size(), Sha256Hex("other bytes of 16"), prepare, Server(content, &corrupt, &opens), nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));
  // Refused before any byte (NOT_FOUND, not retried): no empty .part is left behind.
  auto refuse = [](grpc::ClientContext*, uint64_t) -> std::unique_ptr<grpc::ClientReaderInterface<FileChunk>> {
    return std::make_unique<ScriptedReader>(std::deque<FileChunk>{}, grpc::Status(grpc::StatusCode::NOT_FOUND, "no such blob"));
  };
  s = DownloadToFile(dest, content.size(), Sha256Hex(content), prepare, refuse, nullptr);
  EXPECT_EQ(s.code(), absl::StatusCode::kNotFound) << s;
  EXPECT_FALSE(std::filesystem::exists(dest + ".part"));
  EXPECT_FALSE(std::filesystem::exists(dest));
}

// An interrupted (retryable) stream still resumes from the bytes it kept.
TEST(DownloadToFile, UnavailableMidStreamResumesFromTheKeptBytes) {
  test::TempDir dir;
  const std::string dest = dir.Sub("r.bin"), content = "resumable content of some length";
  std::vector<uint64_t> offsets;
  auto open = [&](grpc::ClientContext*, uint64_t offset) -> std::unique_ptr<grpc::ClientReaderInterface<FileChunk>> {
    offsets.push_back(offset);
    if (offsets.size() == 1)
      return std::make_unique<ScriptedReader>(std::deque<FileChunk>{Chunk(0, content.substr(0, 10))},
                                              grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset"));
    return std::make_unique<ScriptedReader>(std::deque<FileChunk>{Chunk(offset, content.substr(offset))}, grpc::Status::OK);
  };
  absl::Status s = DownloadToFile(dest, content.size(), Sha256Hex(content), [](grpc::ClientContext*) {}, open, nullptr);
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(offsets, (std::vector<uint64_t>{0, 10}));
  EXPECT_EQ(Read(dest), content);
}

}  // namespace
}  // namespace mq
