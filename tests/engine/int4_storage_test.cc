// W4A8 storage: the packed 4-bit layout (model/int4_pack.h) and the quantized export that uses it
// (format version 2), against version 1 exports (one int8 per weight): a loaded model must compute
// exactly what the in-memory quantized model computes, and corrupt packed tensors must be refused
// with a clear error.
#include "model/int4_pack.h"

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <tuple>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "cpu/mamba_forward.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "model/model_loader.h"
#include "quant/model_quantizer.h"
#include "quant/quantize_pipeline.h"
#include "quant/prepared_quantization.h"
#include "quant/cpu_quant_accelerator.h"
#include "quant/quantized_format.h"
#include "quant/quantized_model_io.h"
#include "test_paths.h"
#include "tiny_quant_options.h"
#include "test_util.h"

namespace mq {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---- the packed layout ------------------------------------------------------------------------

TEST(Int4PackTest, EveryLevelRoundTripsWithTheDocumentedNibbles) {
  // All 15 levels in both nibble positions: element 2j low, 2j+1 high, two's complement.
  std::vector<int8_t> q;
  for (int lo = -7; lo <= 7; ++lo)
    for (int hi = -7; hi <= 7; ++hi) q.push_back(static_cast<int8_t>(lo)), q.push_back(static_cast<int8_t>(hi));
  const int64_t cols = static_cast<int64_t>(q.size());
  auto packed = PackInt4Rows(q.data(), 1, cols, Int4RowBytes(cols));
  ASSERT_TRUE(packed.ok()) << packed.status().ToString();
  ASSERT_EQ(packed->size(), q.size() / 2);
  for (size_t j = 0; j < packed->size(); ++j) {
    const int lo = q[2 * j], hi = q[2 * j + 1];
    const uint8_t expect = static_cast<uint8_t>(((lo + 16) % 16) | (((hi + 16) % 16) << 4));
    ASSERT_EQ((*packed)[j], expect) << "byte " << j << " levels " << lo << ", " << hi;
  }
  std::vector<int8_t> back(q.size(), 99);
  ASSERT_TRUE(UnpackInt4Rows(packed->data(), static_cast<int64_t>(packed->size()), 1, cols, Int4RowBytes(cols),
                             back.data())
                  .ok());
  EXPECT_EQ(back, q);
}

TEST(Int4PackTest, OddAndPaddedWidthsRoundTripWithZeroPadding) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> level(-7, 7);
  for (int64_t cols : {1, 2, 3, 5, 7, 16, 31, 33, 127}) {
    for (int64_t extra : {0, 1, 8}) {  // row_bytes beyond ⌈cols/2⌉ (the GPU pads rows to 16 elements)
      const int64_t rows = 3, row_bytes = Int4RowBytes(cols) + extra;
      std::vector<int8_t> q(static_cast<size_t>(rows * cols));
      for (auto& v : q) v = static_cast<int8_t>(level(rng));
      auto packed = PackInt4Rows(q.data(), rows, cols, row_bytes);
      ASSERT_TRUE(packed.ok());
      ASSERT_EQ(static_cast<int64_t>(packed->size()), rows * row_bytes);
      for (int64_t r = 0; r < rows; ++r) {
        if (cols % 2 == 1) EXPECT_EQ((*packed)[r * row_bytes + cols / 2] >> 4, 0) << "odd row's last high nibble";
        for (int64_t b = Int4RowBytes(cols); b < row_bytes; ++b) EXPECT_EQ((*packed)[r * row_bytes + b], 0);
      }
      std::vector<int8_t> back(q.size());
      ASSERT_TRUE(UnpackInt4Rows(packed->data(), rows * row_bytes, rows, cols, row_bytes, back.data()).ok());
      ASSERT_EQ(back, q) << "cols " << cols << " row_bytes " << row_bytes;
    }
  }
}

TEST(Int4PackTest, RefusesBadLevelsNibblesPaddingAndSizes) {
  const std::vector<int8_t> bad = {3, -8, 1, 0};
  auto p = PackInt4Rows(bad.data(), 1, 4, 2);
  EXPECT_EQ(p.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(p.status().message().find("column 1"), std::string::npos) << p.status().message();
  EXPECT_FALSE(PackInt4Rows(std::vector<int8_t>{8}.data(), 1, 1, 1).ok());
  EXPECT_EQ(PackInt4Rows(std::vector<int8_t>{1, 2, 3}.data(), 1, 3, 1).status().code(), StatusCode::kInvalidArgument);

  std::vector<int8_t> out(8);
  // Nibble 0x8 (−8) at row 1, column 2.
  const std::vector<uint8_t> minus8 = {0x21, 0x00, 0x00, 0x18};
  Status s = UnpackInt4Rows(minus8.data(), 4, 2, 4, 2, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("row 1 column 2"), std::string::npos) << s.message();
  // An odd row (3 columns) whose padding nibble is set.
  const std::vector<uint8_t> padding = {0x21, 0x03, 0x21, 0x73};
  s = UnpackInt4Rows(padding.data(), 4, 2, 3, 2, out.data());
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("padding nibble at row 1 column 3"), std::string::npos) << s.message();
  // Sizes: too few bytes for the rows, and rows too narrow for the columns.
  EXPECT_EQ(UnpackInt4Rows(padding.data(), 3, 2, 3, 2, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(UnpackInt4Rows(padding.data(), 4, 2, 5, 2, out.data()).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(UnpackInt4Rows(padding.data(), 4, int64_t{1} << 62, 3, 2, out.data()).code(), StatusCode::kInvalidArgument);
}

// ---- the export ---------------------------------------------------------------------------------

class Int4ExportTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("mq_int4_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  static std::vector<float> Logits(const MambaWeights& w, const std::vector<int32_t>& ids, int64_t B, int64_t L) {
    cpu::MambaState state = cpu::MambaState::Zeros(w.config, B);
    std::vector<float> logits;
    const Status s = cpu::MambaForward(w, ids.data(), B, L, &state, &logits);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return logits;
  }
  static std::vector<int32_t> Ids(int64_t n, int64_t V) {
    std::vector<int32_t> ids(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919 + 13) % V);
    return ids;
  }
  static uintmax_t WeightFileBytes(const fs::path& dir) { return fs::file_size(dir / "model.safetensors"); }

  // Exports `w` as `version`, loads it back and checks the logits bit for bit and the integer
  // weights element for element.
  void ExpectRoundTrip(const MambaWeights& w, const quant::QuantSpec& spec, const std::string& source, int version,
                       const std::string& name) {
    const fs::path out = dir_ / name;
    ASSERT_TRUE(quant::ExportQuantizedModel(w, spec, source, out.string(), json::object(), version).ok());
    std::ifstream in(out / "config.json");
    const json qc = json::parse(in)["quantization_config"];
    EXPECT_EQ(qc["format_version"], version);
    EXPECT_EQ(qc["weight_storage"], version == 1 ? "int8_unpacked" : "int4_packed");
    EXPECT_EQ(qc["w8_layers"], spec.w8_layers);
    auto st = SafetensorsModel::OpenDirectory(out.string());
    ASSERT_TRUE(st.ok());
    const int64_t E = w.config.intermediate_size;
    for (size_t i = 0; i < w.layers.size(); ++i) {
      // Packed from version 2 on, except the layers kept at 8 bits (version 3).
      const bool packed = version >= 2 && spec.LayerWeightBits(static_cast<int64_t>(i)) == 4;
      const TensorView* xw = st->Find("backbone.layers." + std::to_string(i) + ".mixer.x_proj.weight");
      ASSERT_NE(xw, nullptr);
      EXPECT_EQ(xw->dtype, packed ? DType::kU8 : DType::kI8) << name << " layer " << i;
      EXPECT_EQ(xw->shape[1], packed ? (E + 1) / 2 : E) << name << " layer " << i;
    }

    auto loaded = LoadModel(out.string());
    ASSERT_TRUE(loaded.ok()) << loaded.status().ToString();
    ASSERT_TRUE(loaded->quantized);
    for (size_t i = 0; i < w.layers.size(); ++i) {
      const auto& a = w.layers[i];
      const auto& b = loaded->weights.layers[i];
      for (auto [la, lb] : {std::pair{&a.in_proj, &b.in_proj}, {&a.x_proj, &b.x_proj}, {&a.dt_proj, &b.dt_proj},
                            {&a.out_proj, &b.out_proj}}) {
        ASSERT_TRUE(lb->quant.has_value());
        EXPECT_EQ(lb->quant->weight_bits, spec.LayerWeightBits(static_cast<int64_t>(i)));
        EXPECT_EQ(lb->quant->qweight, la->quant->qweight) << name << " layer " << i;
        EXPECT_EQ(lb->quant->weight_scale, la->quant->weight_scale);
      }
    }
    const int64_t B = 2, L = 19;
    const std::vector<int32_t> ids = Ids(B * L, w.config.vocab_size);
    const std::vector<float> expect = Logits(w, ids, B, L), got = Logits(loaded->weights, ids, B, L);
    ASSERT_EQ(got.size(), expect.size());
    size_t differ = 0;
    for (size_t i = 0; i < got.size(); ++i) differ += std::memcmp(&got[i], &expect[i], sizeof(float)) != 0;
    EXPECT_EQ(differ, 0u) << name << ": logits that are not bit-identical to the in-memory model";
  }

  // Rewrites out/model.safetensors with `edit` applied to every tensor (it may change the
  // dtype, shape and bytes).
  static void RewriteTensors(const fs::path& out,
                             const std::function<void(const std::string&, DType&, std::vector<int64_t>&,
                                                      std::vector<uint8_t>&)>& edit) {
    SafetensorsWriter w;
    {
      auto st = SafetensorsModel::OpenDirectory(out.string());
      ASSERT_TRUE(st.ok());
      for (const std::string& n : st->Names()) {
        const TensorView* v = st->Find(n);
        DType dt = v->dtype;
        std::vector<int64_t> shape = v->shape;
        std::vector<uint8_t> bytes(v->data, v->data + v->nbytes);
        edit(n, dt, shape, bytes);
        w.Add(n, dt, shape, bytes);
      }
    }
    ASSERT_TRUE(w.Write((out / "model.safetensors").string()).ok());
  }

  fs::path dir_;
};

// MambaQuant W4A8 on mamba-tiny (rotations, S-SiLU, online R2): the version 2 export stores
// packed weights, the version 1 export int8 ones, and both load to the same integers.
TEST_F(Int4ExportTest, W4A8TinyLoadsBitIdenticalFromPackedAndOldFormat) {
  quant::QuantizeOptions o = testing::TinyQuantOptions("w4a8");
  o.seed = 3;
  auto build = quant::BuildQuantizedModel(o, [](const quant::Progress&) { return true; });
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  auto spec = quant::QuantSpec::FromJson(json::parse(build->spec_json));
  ASSERT_TRUE(spec.ok());
  ASSERT_EQ(spec->weight_bits, 4);
  ExpectRoundTrip(build->model, *spec, o.model_dir, 3, "v3");
  ExpectRoundTrip(build->model, *spec, o.model_dir, 2, "v2");
  ExpectRoundTrip(build->model, *spec, o.model_dir, 1, "v1");
  // The packed linears take half the bytes: the weight file shrinks by half of them.
  int64_t linear_weights = 0;
  for (const auto& L : build->model.layers)
    for (const Linear* l : {&L.in_proj, &L.x_proj, &L.dt_proj, &L.out_proj})
      linear_weights += l->out_features * l->in_features;
  const int64_t saved = static_cast<int64_t>(WeightFileBytes(dir_ / "v1")) - static_cast<int64_t>(WeightFileBytes(dir_ / "v2"));
  EXPECT_NEAR(static_cast<double>(saved), static_cast<double>(linear_weights / 2), 64.0)
      << "v1 " << WeightFileBytes(dir_ / "v1") << " bytes, v2 " << WeightFileBytes(dir_ / "v2");
  // Writing a version this build does not know is refused.
  EXPECT_EQ(quant::ExportQuantizedModel(build->model, *spec, o.model_dir, (dir_ / "v4").string(), json::object(), 4).code(),
            StatusCode::kInvalidArgument);
}

// Mixed precision (format version 3): a w4a8 export with layer 1 kept at 8-bit weights stores
// that layer's linears as I8 and the others packed; it loads bit-identical, the weights-only
// re-quantization of one preparation builds the same model, and configs that misstate the
// layers are refused.
TEST_F(Int4ExportTest, MixedWidthsRoundTripAndMisstatedLayersAreRefused) {
  quant::QuantizeOptions o = testing::TinyQuantOptions("w4a8");
  o.seed = 3;
  o.w8_layers = {1};
  auto build = quant::BuildQuantizedModel(o, nullptr);
  ASSERT_TRUE(build.ok()) << build.status().ToString();
  auto spec = quant::QuantSpec::FromJson(json::parse(build->spec_json));
  ASSERT_TRUE(spec.ok()) << spec.status().ToString();
  ASSERT_EQ(spec->w8_layers, std::vector<int>{1});
  EXPECT_EQ(spec->LayerWeightBits(0), 4);
  EXPECT_EQ(spec->LayerWeightBits(1), 8);
  ExpectRoundTrip(build->model, *spec, o.model_dir, 3, "v3");
  for (int old_version : {1, 2})  // they cannot say which layers are 8-bit
    EXPECT_EQ(quant::ExportQuantizedModel(build->model, *spec, o.model_dir, (dir_ / ("old" + std::to_string(old_version))).string(),
                                          json::object(), old_version)
                  .code(),
              StatusCode::kInvalidArgument);

  // One preparation, weights quantized twice: all-4-bit and layer 1 at 8 bits. The second is the
  // model the full build made; layer 0 is the same in both.
  quant::QuantizeOptions plain = o;
  plain.w8_layers.clear();
  auto prep = quant::PrepareQuantization(plain, nullptr, quant::CpuAccelerator());
  ASSERT_TRUE(prep.ok()) << prep.status().ToString();
  auto mixed = quant::QuantizePrepared(*prep, {1});
  auto all4 = quant::QuantizePrepared(*prep, {});
  ASSERT_TRUE(mixed.ok() && all4.ok());
  for (size_t i = 0; i < 2; ++i) {
    const auto& m = mixed->layers[i];
    const auto& b = build->model.layers[i];
    const auto& a = all4->layers[i];
    for (auto [lm, lb, la] : {std::tuple{&m.in_proj, &b.in_proj, &a.in_proj}, {&m.x_proj, &b.x_proj, &a.x_proj},
                              {&m.dt_proj, &b.dt_proj, &a.dt_proj}, {&m.out_proj, &b.out_proj, &a.out_proj}}) {
      EXPECT_EQ(lm->quant->qweight, lb->quant->qweight) << "layer " << i;
      EXPECT_EQ(lm->quant->weight_scale, lb->quant->weight_scale) << "layer " << i;
      if (i == 0) EXPECT_EQ(lm->quant->qweight, la->quant->qweight);
      else EXPECT_NE(lm->quant->qweight, la->quant->qweight);
    }
  }
  // The tuner's trials assemble layers from both widths quantized once: the same models.
  auto widths = quant::LayerWidthChoices::Create(*prep);
  ASSERT_TRUE(widths.ok()) << widths.status().ToString();
  for (const std::vector<int>& w8 : std::vector<std::vector<int>>{{}, {0}, {1}, {1, 0}}) {
    auto assembled = widths->Assemble(w8);
    auto direct = quant::QuantizePrepared(*prep, w8);
    ASSERT_TRUE(assembled.ok() && direct.ok());
    for (size_t i = 0; i < 2; ++i)
      for (auto [la, ld] : {std::pair{&assembled->layers[i].in_proj, &direct->layers[i].in_proj},
                            {&assembled->layers[i].x_proj, &direct->layers[i].x_proj},
                            {&assembled->layers[i].dt_proj, &direct->layers[i].dt_proj},
                            {&assembled->layers[i].out_proj, &direct->layers[i].out_proj}}) {
        EXPECT_EQ(la->quant->weight_bits, ld->quant->weight_bits);
        EXPECT_EQ(la->quant->qweight, ld->quant->qweight) << "layer " << i;
        EXPECT_EQ(la->quant->weight_scale, ld->quant->weight_scale) << "layer " << i;
      }
  }
  EXPECT_EQ(widths->Assemble({2}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(quant::QuantizePrepared(*prep, {2}).status().code(), StatusCode::kInvalidArgument);  // tiny has 2 layers
  EXPECT_EQ(quant::QuantizePrepared(*prep, {1, 1}).status().code(), StatusCode::kInvalidArgument);
  // The 8-bit layer costs its linears' other half back on disk.
  const fs::path all4_dir = dir_ / "all4";
  quant::QuantSpec spec4 = *spec;
  spec4.w8_layers.clear();
  ASSERT_TRUE(quant::ExportQuantizedModel(*all4, spec4, o.model_dir, all4_dir.string(), json::object()).ok());
  int64_t layer1 = 0;
  for (const Linear* l : {&build->model.layers[1].in_proj, &build->model.layers[1].x_proj,
                          &build->model.layers[1].dt_proj, &build->model.layers[1].out_proj})
    layer1 += l->out_features * l->in_features;
  EXPECT_NEAR(static_cast<double>(WeightFileBytes(dir_ / "v3")) - static_cast<double>(WeightFileBytes(all4_dir)),
              static_cast<double>(layer1 / 2), 64.0);

  // Configs that misstate the layers.
  auto with_config = [&](const std::string& name, const std::function<void(json&)>& edit) {
    const fs::path bad = dir_ / name;
    fs::copy(dir_ / "v3", bad);
    std::ifstream cin(bad / "config.json");
    json c = json::parse(cin);
    edit(c["quantization_config"]);
    std::ofstream(bad / "config.json") << c.dump();
    return LoadModel(bad.string()).status();
  };
  for (const auto& [name, value] : std::vector<std::pair<std::string, json>>{{"beyond", json::array({2})},
                                                                            {"repeat", json::array({1, 1})},
                                                                            {"descending", json::array({1, 0})},
                                                                            {"negative", json::array({-1})},
                                                                            {"string", json::array({"1"})},
                                                                            {"float", json::array({1.0})},
                                                                            {"object", json::object()}}) {
    const Status s = with_config(name, [&](json& qc) { qc["w8_layers"] = value; });
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << name << ": " << s.ToString();
    EXPECT_NE(s.message().find("w8_layers"), std::string::npos) << s.message();
  }
  Status s = with_config("on_version2", [](json& qc) { qc["format_version"] = 2; });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  EXPECT_NE(s.message().find("format_version 3"), std::string::npos) << s.message();
  s = with_config("on_w8a8", [](json& qc) {
    qc["bits"] = "w8a8";
    qc["weight_bits"] = 8;
    qc["weight_storage"] = "int8_unpacked";
  });
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << s.ToString();
  // Layer 1 stored I8 while the config says every layer is 4-bit (packed): the reader refuses it.
  s = with_config("dropped", [](json& qc) { qc.erase("w8_layers"); });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layers.1"), std::string::npos) << s.message();
  // And the converse: layer 0 (packed U8) claimed to be 8-bit.
  s = with_config("claimed", [](json& qc) { qc["w8_layers"] = json::array({0, 1}); });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find("layers.0"), std::string::npos) << s.message();
}

// Odd input widths (dt_rank 5: dt_proj rows of 5 weights, 3 bytes with a zero high nibble).
TEST_F(Int4ExportTest, OddWidthsRoundTrip) {
  auto loaded = LoadModel(testing::RepoPath("models/mamba-tiny"));
  ASSERT_TRUE(loaded.ok());
  MambaWeights w = loaded->weights;
  const int64_t R = 5, N = w.config.state_size, E = w.config.intermediate_size;
  w.config.time_step_rank = R;
  uint64_t seed = 1;
  for (auto& L : w.layers) {
    L.x_proj.out_features = R + 2 * N;
    L.x_proj.weight = testing::RandomFloat(static_cast<size_t>((R + 2 * N) * E), ++seed, -0.1f, 0.1f);
    L.dt_proj.in_features = R;
    L.dt_proj.weight = testing::RandomFloat(static_cast<size_t>(E * R), ++seed, -0.5f, 0.5f);
  }
  quant::QuantizeOptions qo;
  qo.preset = "rtn";
  qo.bits = "w4a8";
  auto spec = quant::QuantSpec::FromOptions(qo);
  ASSERT_TRUE(spec.ok());
  ASSERT_TRUE(quant::QuantizeModelWeights(w, *spec, nullptr).ok());
  // The source config must describe the model: a copy of tiny's with dt_rank 5.
  const fs::path source = dir_ / "source";
  fs::create_directories(source);
  std::ifstream in(testing::RepoPath("models/mamba-tiny/config.json"));
  json cfg = json::parse(in);
  cfg["time_step_rank"] = R;
  std::ofstream(source / "config.json") << cfg.dump();
  ExpectRoundTrip(w, *spec, source.string(), 2, "v2");
  ExpectRoundTrip(w, *spec, source.string(), 1, "v1");
  auto st = SafetensorsModel::OpenDirectory((dir_ / "v2").string());
  ASSERT_TRUE(st.ok());
  EXPECT_EQ(st->Find("backbone.layers.0.mixer.dt_proj.weight")->shape, (std::vector<int64_t>{E, 3}));

  // Corruptions of the packed export, each refused with an error naming what is wrong.
  const std::string dt = "backbone.layers.1.mixer.dt_proj.weight";
  auto corrupt = [&](const std::string& name, const std::function<void(const std::string&, DType&,
                                                                        std::vector<int64_t>&, std::vector<uint8_t>&)>& edit) {
    const fs::path bad = dir_ / name;
    fs::copy(dir_ / "v2", bad);
    RewriteTensors(bad, edit);
    return LoadModel(bad.string()).status();
  };
  Status s = corrupt("padding", [&](const std::string& n, DType&, std::vector<int64_t>&, std::vector<uint8_t>& b) {
    if (n == dt) b[3 * 7 + 2] |= 0x10;  // row 7's padding nibble
  });
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find(dt), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("padding nibble at row 7 column 5"), std::string::npos) << s.message();
  s = corrupt("minus8", [&](const std::string& n, DType&, std::vector<int64_t>&, std::vector<uint8_t>& b) {
    if (n == dt) b[3 * 2 + 1] = static_cast<uint8_t>((b[3 * 2 + 1] & 0xF0) | 0x08);  // row 2, column 2
  });
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("row 2 column 2"), std::string::npos) << s.message();
  s = corrupt("truncated", [&](const std::string& n, DType&, std::vector<int64_t>& shape, std::vector<uint8_t>& b) {
    if (n == dt) shape[1] = 2, b.resize(static_cast<size_t>(E * 2));  // rows of 2 bytes: 4 columns
  });
  EXPECT_FALSE(s.ok());
  EXPECT_NE(s.message().find(dt), std::string::npos) << s.message();
  s = corrupt("unpacked_i8", [&](const std::string& n, DType& t, std::vector<int64_t>&, std::vector<uint8_t>&) {
    if (n == dt) t = DType::kI8;
  });
  EXPECT_EQ(s.code(), StatusCode::kDataLoss);
  EXPECT_NE(s.message().find("must be U8"), std::string::npos) << s.message();
  // A config whose storage does not match its version.
  for (const auto& [version, storage] : std::vector<std::pair<int, std::string>>{{2, "int8_unpacked"}, {1, "int4_packed"}}) {
    const fs::path bad = dir_ / ("storage_" + storage);
    fs::copy(dir_ / "v2", bad);
    std::ifstream cin(bad / "config.json");
    json c = json::parse(cin);
    c["quantization_config"]["format_version"] = version;
    c["quantization_config"]["weight_storage"] = storage;
    std::ofstream(bad / "config.json") << c.dump();
    s = LoadModel(bad.string()).status();
    EXPECT_EQ(s.code(), StatusCode::kDataLoss) << storage;
    EXPECT_NE(s.message().find("weight_storage"), std::string::npos) << s.message();
  }
  // A file cut short inside the packed tensors.
  {
    const fs::path bad = dir_ / "short";
    fs::copy(dir_ / "v2", bad);
    fs::resize_file(bad / "model.safetensors", fs::file_size(bad / "model.safetensors") - 100);
    EXPECT_FALSE(LoadModel(bad.string()).ok());
  }
}

}  // namespace
}  // namespace mq
