// The safetensors reader: real files, and corrupted ones that must fail with a clear error.
#include "io/safetensors.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "io/safetensors_writer.h"
#include "test_paths.h"

namespace mq {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_st_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Writes a file whose header is `header` verbatim followed by `data_bytes` bytes.
  std::string WriteRaw(const std::string& name, const std::string& header, size_t data_bytes,
                       uint64_t claimed_len = UINT64_MAX) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    uint64_t len = claimed_len == UINT64_MAX ? header.size() : claimed_len;
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header;
    out << std::string(data_bytes, '\x01');
    return path;
  }

  Status OpenStatus(const std::string& path) {
    auto f = SafetensorsFile::Open(path);
    return f.ok() ? OkStatus() : f.status();
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, RoundTripsEveryDtype) {
  SafetensorsWriter w;
  w.AddF32("a.f32", {2, 3}, {1, -2, 3.5f, 0, 1e-3f, -7});
  w.AddI8("b.i8", {4}, {-128, -1, 0, 127});
  std::vector<uint8_t> f16 = {0x00, 0x3c, 0x00, 0xc0};  // 1.0, -2.0
  w.Add("c.f16", DType::kF16, {2}, f16);
  std::vector<uint8_t> bf16 = {0x80, 0x3f, 0x40, 0xc0};  // 1.0, -3.0
  w.Add("d.bf16", DType::kBF16, {2}, bf16);
  int32_t i32[2] = {-5, 70000};
  w.Add("e.i32", DType::kI32, {2}, std::vector<uint8_t>(reinterpret_cast<uint8_t*>(i32), reinterpret_cast<uint8_t*>(i32) + 8));
  int64_t i64[1] = {1234567890123};
  w.Add("f.i64", DType::kI64, {1}, std::vector<uint8_t>(reinterpret_cast<uint8_t*>(i64), reinterpret_cast<uint8_t*>(i64) + 8));
  w.Add("g.empty", DType::kF32, {0, 5}, {});
  w.SetMetadata("format", "pt");
  const std::string path = (dir_ / "all.safetensors").string();
  ASSERT_TRUE(w.Write(path).ok());

  auto f = SafetensorsFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ((*f)->tensors().size(), 7u);
  EXPECT_EQ((*f)->metadata().at("format"), "pt");
  EXPECT_EQ(ToFloat32(*(*f)->Find("a.f32")), (std::vector<float>{1, -2, 3.5f, 0, 1e-3f, -7}));
  EXPECT_EQ(ToFloat32(*(*f)->Find("b.i8")), (std::vector<float>{-128, -1, 0, 127}));
  EXPECT_EQ(ToFloat32(*(*f)->Find("c.f16")), (std::vector<float>{1.0f, -2.0f}));
  EXPECT_EQ(ToFloat32(*(*f)->Find("d.bf16")), (std::vector<float>{1.0f, -3.0f}));
  EXPECT_EQ(*ToInt64(*(*f)->Find("e.i32")), (std::vector<int64_t>{-5, 70000}));
  EXPECT_EQ(*ToInt64(*(*f)->Find("f.i64")), (std::vector<int64_t>{1234567890123}));
  EXPECT_EQ((*f)->Find("g.empty")->numel(), 0);
  EXPECT_EQ((*f)->Find("missing"), nullptr);
  EXPECT_FALSE(ToInt64(*(*f)->Find("a.f32")).ok());
}

TEST_F(SafetensorsTest, HalfAndBFloat16ConversionsRoundTrip) {
  for (float v : {0.0f, 1.0f, -2.5f, 65504.0f, 6.1035156e-05f, 5.9604645e-08f, 3.0517578e-05f, 0.333251953125f}) {
    EXPECT_EQ(HalfToFloat(FloatToHalf(v)), v) << v;
  }
  EXPECT_EQ(FloatToHalf(1e6f), 0x7c00);  // overflow to inf
  for (float v : {0.0f, 1.0f, -3.0f, std::ldexp(1.5f, 100), 0.0078125f}) EXPECT_EQ(BFloat16ToFloat(FloatToBFloat16(v)), v) << v;
}

TEST_F(SafetensorsTest, ReadsTheShardedFixture) {
  auto paths = testing::Fixture("small");
  MQ_REQUIRE_FIXTURE(paths, "small");
  auto model = SafetensorsModel::OpenDirectory(paths.model_dir);
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->size(), 2u + 8u * 10u);  // embeddings + norm_f + 10 tensors per layer
  const TensorView* emb = model->Find("backbone.embeddings.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->dtype, DType::kBF16);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{4096, 384}));
  EXPECT_FALSE(model->Require("backbone.norm_f.weight", {385}).ok());
  EXPECT_EQ(model->Require("no.such.tensor", {1}).status().code(), StatusCode::kNotFound);
}

TEST_F(SafetensorsTest, ReadsTheSingleFileFixture) {
  auto model = SafetensorsModel::OpenDirectory(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(model.ok()) << model.status().ToString();
  EXPECT_EQ(model->size(), 2u + 2u * 10u);
}

TEST_F(SafetensorsTest, RejectsFilesShorterThanTheLengthPrefix) {
  const std::string path = (dir_ / "short.safetensors").string();
  std::ofstream(path, std::ios::binary) << "abc";
  Status st = OpenStatus(path);
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("short.safetensors"), std::string::npos);
  std::ofstream(path, std::ios::binary).close();  // empty file
  EXPECT_EQ(OpenStatus(path).code(), StatusCode::kDataLoss);
}

TEST_F(SafetensorsTest, RejectsHeaderLengthBeyondLimitOrFile) {
  EXPECT_NE(OpenStatus(WriteRaw("huge.st", "{}", 0, 200'000'000)).message().find("limit"), std::string::npos);
  EXPECT_NE(OpenStatus(WriteRaw("past.st", "{}", 0, 4096)).message().find("past the end"), std::string::npos);
}

TEST_F(SafetensorsTest, RejectsInvalidJsonAndWrongTypes) {
  EXPECT_NE(OpenStatus(WriteRaw("bad.st", "{\"a\": [", 0)).message().find("not valid JSON"), std::string::npos);
  EXPECT_EQ(OpenStatus(WriteRaw("arr.st", "[1,2]", 0)).code(), StatusCode::kDataLoss);
  EXPECT_NE(OpenStatus(WriteRaw("dt.st", R"({"w":{"dtype":"F99","shape":[1],"data_offsets":[0,4]}})", 4))
                .message().find("unsupported dtype"), std::string::npos);
  EXPECT_EQ(OpenStatus(WriteRaw("sh.st", R"({"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})", 4)).code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(OpenStatus(WriteRaw("sh2.st", R"({"w":{"dtype":"F32","shape":"x","data_offsets":[0,4]}})", 4)).code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(OpenStatus(WriteRaw("off.st", R"({"w":{"dtype":"F32","shape":[1],"data_offsets":[0]}})", 4)).code(),
            StatusCode::kDataLoss);
  EXPECT_EQ(OpenStatus(WriteRaw("meta.st", R"({"__metadata__":{"a":1}})", 0)).code(), StatusCode::kDataLoss);
}

TEST_F(SafetensorsTest, RejectsLyingSizesAndOffsets) {
  // Shape says 2 floats, offsets give 4 bytes.
  Status st = OpenStatus(WriteRaw("lie.st", R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}})", 4));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("tensor \"w\""), std::string::npos) << st.message();
  // Data runs past the end of the file (truncated file).
  st = OpenStatus(WriteRaw("trunc.st", R"({"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 8));
  EXPECT_NE(st.message().find("past the"), std::string::npos) << st.message();
  // begin > end.
  EXPECT_EQ(OpenStatus(WriteRaw("rev.st", R"({"w":{"dtype":"I8","shape":[0],"data_offsets":[4,0]}})", 4)).code(),
            StatusCode::kDataLoss);
  // Trailing bytes owned by nobody.
  st = OpenStatus(WriteRaw("trail.st", R"({"w":{"dtype":"I8","shape":[2],"data_offsets":[0,2]}})", 6));
  EXPECT_NE(st.message().find("not owned"), std::string::npos) << st.message();
  // A gap between tensors.
  st = OpenStatus(WriteRaw("gap.st",
      R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"I8","shape":[2],"data_offsets":[4,6]}})", 6));
  EXPECT_NE(st.message().find("gap"), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, RejectsOverlappingTensors) {
  Status st = OpenStatus(WriteRaw("overlap.st",
      R"({"a":{"dtype":"I8","shape":[4],"data_offsets":[0,4]},"b":{"dtype":"I8","shape":[4],"data_offsets":[2,6]}})", 6));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("overlaps"), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, RejectsShapesWhoseSizeOverflows) {
  Status st = OpenStatus(WriteRaw("ovf.st",
      R"({"w":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}})", 4));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("overflows"), std::string::npos) << st.message();
  st = OpenStatus(WriteRaw("ovf2.st", R"({"w":{"dtype":"I64","shape":[2305843009213693952],"data_offsets":[0,4]}})", 4));
  EXPECT_NE(st.message().find("overflows"), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, RejectsDuplicateTensorNames) {
  Status st = OpenStatus(WriteRaw("dup.st",
      R"({"a":{"dtype":"I8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"I8","shape":[2],"data_offsets":[2,4]}})", 4));
  EXPECT_EQ(st.code(), StatusCode::kDataLoss);
  EXPECT_NE(st.message().find("duplicate"), std::string::npos) << st.message();
}

TEST_F(SafetensorsTest, EveryTruncationOfARealFileFailsCleanly) {
  const std::string src = testing::RepoPath("models/mamba-tiny/model.safetensors");
  std::ifstream in(src, std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  ASSERT_GT(bytes.size(), 1000u);
  for (size_t cut : {size_t{0}, size_t{4}, size_t{8}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    const std::string path = (dir_ / "cut.st").string();
    std::ofstream(path, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(cut));
    EXPECT_FALSE(OpenStatus(path).ok()) << "cut at " << cut;
  }
  // Flipping bytes inside the header gives an error or a still-consistent file, never a crash.
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  for (size_t pos = 8; pos < 8 + header_len; pos += 97) {
    std::string mutated = bytes;
    mutated[pos] = static_cast<char>(mutated[pos] ^ 0x5a);
    const std::string path = (dir_ / "flip.st").string();
    std::ofstream(path, std::ios::binary).write(mutated.data(), static_cast<std::streamsize>(mutated.size()));
    (void)OpenStatus(path);
  }
}

TEST_F(SafetensorsTest, ShardedIndexErrorsNameTheProblem) {
  SafetensorsWriter w;
  w.AddF32("x", {1}, {1.0f});
  ASSERT_TRUE(w.Write((dir_ / "shard-1.safetensors").string()).ok());
  auto write_index = [&](const std::string& text) { std::ofstream(dir_ / "model.safetensors.index.json") << text; };

  write_index(R"({"weight_map":{"x":"shard-1.safetensors"}})");
  EXPECT_TRUE(SafetensorsModel::OpenDirectory(dir_.string()).ok());

  write_index(R"({"weight_map":{"x":"shard-1.safetensors","y":"shard-2.safetensors"}})");
  auto m = SafetensorsModel::OpenDirectory(dir_.string());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
  EXPECT_NE(m.status().message().find("shard-2.safetensors"), std::string::npos);

  write_index(R"({"weight_map":{"x":"shard-1.safetensors","y":"shard-1.safetensors"}})");
  m = SafetensorsModel::OpenDirectory(dir_.string());
  EXPECT_EQ(m.status().code(), StatusCode::kDataLoss);
  EXPECT_NE(m.status().message().find("\"y\""), std::string::npos);

  write_index(R"({"weight_map":{"x":"../etc/passwd"}})");
  EXPECT_NE(SafetensorsModel::OpenDirectory(dir_.string()).status().message().find("plain file name"), std::string::npos);

  write_index(R"({"weight_map": 3})");
  EXPECT_EQ(SafetensorsModel::OpenDirectory(dir_.string()).status().code(), StatusCode::kDataLoss);
  write_index("not json");
  EXPECT_EQ(SafetensorsModel::OpenDirectory(dir_.string()).status().code(), StatusCode::kDataLoss);

  fs::remove(dir_ / "model.safetensors.index.json");
  EXPECT_EQ(SafetensorsModel::OpenDirectory(dir_.string()).status().code(), StatusCode::kNotFound);
}

}  // namespace
}  // namespace mq
