// One owner for the quantization job spec: the same specs go to the server's check
// (NormalizeQuantSpec, through the proto adapter) and to the engine (its job-spec check and its
// entry point, QuantizeModel), and both must accept or refuse each alike — boundary values
// included. The engine side of each row is written by hand on QuantizeOptions, not derived
// through the adapter, so a wrong adapter shows as a disagreement.
#include <cmath>
#include <filesystem>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <unistd.h>

#include "job_spec_validation.h"
#include "quant/job_spec.h"
#include "quant/quantize_pipeline.h"
#include "quant_spec_proto.h"
#include "test_support.h"

namespace mq {
namespace {

using mambaquant::v1::QuantSpec;
namespace fs = std::filesystem;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
constexpr double kInf = std::numeric_limits<double>::infinity();

struct Row {
  std::string name;
  std::function<void(QuantSpec&)> proto;                // the spec as a client sends it
  std::function<void(quant::QuantizeOptions&)> engine;  // the same spec as mq-engine quantize builds it
  bool accepted;
  std::string field;  // refused: the field the message must name
};

QuantSpec BaseSpec() {
  QuantSpec s;
  s.set_model("mamba-tiny");
  s.set_calib_dataset("calib:1");
  return s;
}

std::vector<Row> Rows() {
  using O = quant::QuantizeOptions;
  using L = quant::JobSpecLimits;
  std::vector<Row> rows = {
      {"defaults", [](QuantSpec&) {}, [](O&) {}, true, ""},
      // seq_len: the engine's minimum is 2 (a window of one token predicts nothing).
      {"seq_len_min_minus_1", [](QuantSpec& s) { s.set_seq_len(1); }, [](O& o) { o.seq_len = 1; }, false, "seq_len"},
      {"seq_len_min", [](QuantSpec& s) { s.set_seq_len(2); }, [](O& o) { o.seq_len = 2; }, true, ""},
      {"seq_len_max", [](QuantSpec& s) { s.set_seq_len(65536); }, [](O& o) { o.seq_len = 65536; }, true, ""},
      {"seq_len_max_plus_1", [](QuantSpec& s) { s.set_seq_len(65537); }, [](O& o) { o.seq_len = 65537; }, false, "seq_len"},
      {"seq_len_negative", [](QuantSpec& s) { s.set_seq_len(-2); }, [](O& o) { o.seq_len = -2; }, false, "seq_len"},
      {"seq_len_int32_max", [](QuantSpec& s) { s.set_seq_len(std::numeric_limits<int32_t>::max()); },
       [](O& o) { o.seq_len = std::numeric_limits<int32_t>::max(); }, false, "seq_len"},
      // num_samples: 0 in the message is "unset", the engine's default (128).
      {"num_samples_unset", [](QuantSpec& s) { s.set_num_samples(0); }, [](O& o) { o.num_samples = 128; }, true, ""},
      {"num_samples_1", [](QuantSpec& s) { s.set_num_samples(1); }, [](O& o) { o.num_samples = 1; }, true, ""},
      {"num_samples_max", [](QuantSpec& s) { s.set_num_samples(65536); }, [](O& o) { o.num_samples = 65536; }, true, ""},
      {"num_samples_max_plus_1", [](QuantSpec& s) { s.set_num_samples(65537); }, [](O& o) { o.num_samples = 65537; },
       false, "num_samples"},
      {"num_samples_negative", [](QuantSpec& s) { s.set_num_samples(-1); }, [](O& o) { o.num_samples = -1; }, false,
       "num_samples"},
      {"eval_window_1", [](QuantSpec& s) { s.set_eval_window(1); }, [](O& o) { o.eval_window = 1; }, false, "eval_window"},
      {"eval_window_2", [](QuantSpec& s) { s.set_eval_window(2); }, [](O& o) { o.eval_window = 2; }, true, ""},
      {"eval_window_max", [](QuantSpec& s) { s.set_eval_window(65536); }, [](O& o) { o.eval_window = 65536; }, true, ""},
      {"eval_window_max_plus_1", [](QuantSpec& s) { s.set_eval_window(65537); }, [](O& o) { o.eval_window = 65537; },
       false, "eval_window"},
      // Names.
      {"preset_unknown", [](QuantSpec& s) { s.set_preset("gptq"); }, [](O& o) { o.preset = "gptq"; }, false, "preset"},
      {"preset_wrong_case", [](QuantSpec& s) { s.set_preset("RTN"); }, [](O& o) { o.preset = "RTN"; }, false, "preset"},
      {"bits_w4a8", [](QuantSpec& s) { s.set_bits("w4a8"); }, [](O& o) { o.bits = "w4a8"; }, true, ""},
      {"bits_unknown", [](QuantSpec& s) { s.set_bits("w2a2"); }, [](O& o) { o.bits = "w2a2"; }, false, "bits"},
      {"scope_full", [](QuantSpec& s) { s.set_scope("full"); }, [](O& o) { o.scope = "full"; }, true, ""},
      {"scope_unknown", [](QuantSpec& s) { s.set_scope("most"); }, [](O& o) { o.scope = "most"; }, false, "scope"},
      {"act_per_tensor", [](QuantSpec& s) { s.set_act_granularity("per_tensor"); },
       [](O& o) { o.act_granularity = "per_tensor"; }, true, ""},
      {"act_unknown", [](QuantSpec& s) { s.set_act_granularity("per_group"); },
       [](O& o) { o.act_granularity = "per_group"; }, false, "act_granularity"},
      {"weight_clip_mse", [](QuantSpec& s) { s.set_weight_clip("mse"); }, [](O& o) { o.weight_clip = "mse"; }, true, ""},
      {"weight_clip_unknown", [](QuantSpec& s) { s.set_weight_clip("gptq"); }, [](O& o) { o.weight_clip = "gptq"; },
       false, "weight_clip"},
      {"state_per_step", [](QuantSpec& s) { s.set_scope("full"), s.set_state_granularity("per_step"); },
       [](O& o) { o.scope = "full", o.state_granularity = "per_step"; }, true, ""},
      {"state_unknown", [](QuantSpec& s) { s.set_state_granularity("per_channel"); },
       [](O& o) { o.state_granularity = "per_channel"; }, false, "state_granularity"},
      // Percentages: NaN fails every comparison and must not slip through one.
      {"percentile_nan", [](QuantSpec& s) { s.set_act_percentile(kNaN); }, [](O& o) { o.act_percentile = kNaN; }, false,
       "act_percentile"},
      {"percentile_inf", [](QuantSpec& s) { s.set_act_percentile(kInf); }, [](O& o) { o.act_percentile = kInf; }, false,
       "act_percentile"},
      {"percentile_0", [](QuantSpec& s) { s.set_act_percentile(0.0); }, [](O& o) { o.act_percentile = 0.0; }, false,
       "act_percentile"},
      {"percentile_tiny", [](QuantSpec& s) { s.set_act_percentile(1e-9); }, [](O& o) { o.act_percentile = 1e-9; }, true,
       ""},
      {"percentile_100", [](QuantSpec& s) { s.set_act_percentile(100.0); }, [](O& o) { o.act_percentile = 100.0; }, true,
       ""},
      {"percentile_above_100", [](QuantSpec& s) { s.set_act_percentile(std::nextafter(100.0, 200.0)); },
       [](O& o) { o.act_percentile = std::nextafter(100.0, 200.0); }, false, "act_percentile"},
      {"alpha_nan", [](QuantSpec& s) { s.set_smooth_alpha(kNaN); }, [](O& o) { o.smooth_alpha = kNaN; }, false,
       "smooth_alpha"},
      {"alpha_0", [](QuantSpec& s) { s.set_smooth_alpha(0.0); }, [](O& o) { o.smooth_alpha = 0.0; }, false,
       "smooth_alpha"},
      {"alpha_1", [](QuantSpec& s) { s.set_smooth_alpha(1.0); }, [](O& o) { o.smooth_alpha = 1.0; }, false,
       "smooth_alpha"},
      {"alpha_0_05", [](QuantSpec& s) { s.set_smooth_alpha(0.05); }, [](O& o) { o.smooth_alpha = 0.05; }, true, ""},
      {"alpha_0_95", [](QuantSpec& s) { s.set_smooth_alpha(0.95); }, [](O& o) { o.smooth_alpha = 0.95; }, true, ""},
      {"tolerable_loss_nan", [](QuantSpec& s) { s.set_tolerable_loss_percent(kNaN); },
       [](O& o) { o.tolerable_loss_percent = kNaN; }, false, "tolerable_loss_percent"},
      {"tolerable_loss_negative", [](QuantSpec& s) { s.set_tolerable_loss_percent(-1.0); },
       [](O& o) { o.tolerable_loss_percent = -1.0; }, false, "tolerable_loss_percent"},
      {"tolerable_loss_100", [](QuantSpec& s) { s.set_tolerable_loss_percent(100.0); },
       [](O& o) { o.tolerable_loss_percent = 100.0; }, true, ""},
      {"tolerable_loss_100_5", [](QuantSpec& s) { s.set_tolerable_loss_percent(100.5); },
       [](O& o) { o.tolerable_loss_percent = 100.5; }, false, "tolerable_loss_percent"},
      {"tolerable_loss_half", [](QuantSpec& s) { s.set_tolerable_loss_percent(0.5); },
       [](O& o) { o.tolerable_loss_percent = 0.5; }, true, ""},
      // w8_layers: w4a8 only, no repeats, below the limit (the model's own layer count is checked
      // once it is loaded); not together with the accuracy-driven mode, which chooses them.
      {"w8_layers_w4a8", [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(3), s.add_w8_layers(0); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {3, 0}; }, true, ""},
      {"w8_layers_last", [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(L::kMaxW8Layers - 1); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {L::kMaxW8Layers - 1}; }, true, ""},
      {"w8_layers_beyond", [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(L::kMaxW8Layers); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {L::kMaxW8Layers}; }, false, "w8_layers"},
      {"w8_layers_uint32_max", [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(0xFFFFFFFFu); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {-1}; }, false, "w8_layers"},
      {"w8_layers_repeat", [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(2), s.add_w8_layers(2); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {2, 2}; }, false, "w8_layers"},
      {"w8_layers_on_w8a8", [](QuantSpec& s) { s.add_w8_layers(0); }, [](O& o) { o.w8_layers = {0}; }, false,
       "w8_layers"},
      {"w8_layers_with_budget",
       [](QuantSpec& s) { s.set_bits("w4a8"), s.add_w8_layers(0), s.set_tolerable_loss_percent(2.0); },
       [](O& o) { o.bits = "w4a8", o.w8_layers = {0}, o.tolerable_loss_percent = 2.0; }, false, "w8_layers"},
  };
  {
    Row too_many{"w8_layers_too_many",
                 [](QuantSpec& s) {
                   s.set_bits("w4a8");
                   for (int i = 0; i <= L::kMaxW8Layers; ++i) s.add_w8_layers(static_cast<uint32_t>(i % L::kMaxW8Layers));
                 },
                 [](O& o) {
                   o.bits = "w4a8";
                   for (int i = 0; i <= L::kMaxW8Layers; ++i) o.w8_layers.push_back(i % L::kMaxW8Layers);
                 },
                 false, "w8_layers"};
    rows.push_back(too_many);
  }
  // Every accepted name of every choice, each alone.
  for (auto n : quant::kPresetNames) {
    std::string v(n);
    rows.push_back({"preset_" + v, [v](QuantSpec& s) { s.set_preset(v); }, [v](O& o) { o.preset = v; }, true, ""});
  }
  static_assert(L::kMinSeqLen == 2 && L::kMaxSamples == 65536, "the rows above spell the limits out");
  return rows;
}

// What the engine's entry point answers for `o`: refused up front (INVALID_ARGUMENT, nothing
// written), or accepted and then failing only at LOAD on the missing model directory.
Status EngineRun(quant::QuantizeOptions o, const fs::path& out) {
  o.model_dir = "/nonexistent/mq-job-spec-test-model";
  o.calib_text_path = "/nonexistent/calib.txt";
  o.output_dir = out.string();
  auto r = quant::QuantizeModel(o, nullptr);
  return r.status();
}

TEST(JobSpec, ServerAndEngineAcceptAndRefuseTheSameSpecs) {
  const fs::path out = fs::temp_directory_path() / ("mq-job-spec-test-" + std::to_string(::getpid()));
  for (const Row& row : Rows()) {
    SCOPED_TRACE(row.name);
    QuantSpec spec = BaseSpec();
    row.proto(spec);
    const absl::Status server = server::NormalizeQuantSpec(&spec);

    quant::QuantizeOptions o;
    row.engine(o);
    const Status engine = quant::ValidateJobOptions(o);
    const Status run = EngineRun(o, out);

    EXPECT_EQ(server.ok(), row.accepted) << server;
    EXPECT_EQ(engine.ok(), row.accepted) << engine.ToString();
    // The engine's run refuses exactly what its check refuses, before touching the disk.
    if (row.accepted) {
      EXPECT_NE(run.code(), StatusCode::kInvalidArgument) << run.ToString();
      EXPECT_NE(run.code(), StatusCode::kOk);  // the model does not exist
    } else {
      EXPECT_EQ(run.code(), StatusCode::kInvalidArgument) << run.ToString();
      EXPECT_EQ(server.code(), absl::StatusCode::kInvalidArgument);
      EXPECT_NE(server.message().find("spec." + row.field), std::string::npos) << server;
      EXPECT_NE(engine.message().find(row.field), std::string::npos) << engine.ToString();
    }
    EXPECT_FALSE(fs::exists(out));
  }
}

TEST(JobSpec, TheAdapterBuildsWhatTheCliBuilds) {
  QuantSpec spec = BaseSpec();
  spec.set_preset("quarot");
  spec.set_bits("w4a8");
  spec.set_scope("full");
  spec.set_act_granularity("per_tensor");
  spec.set_num_samples(7);
  spec.set_seq_len(33);
  spec.set_eval_window(65);
  spec.set_seed(1234567890123ull);
  spec.set_klt_r1(false);
  spec.set_klt_r5(false);
  spec.set_online_r2(false);
  spec.set_smooth_s2(false);
  spec.set_smooth_s4(false);
  spec.set_act_percentile(99.5);
  spec.set_smooth_alpha(0.35);
  spec.set_quantize_lm_head(true);
  spec.set_r1_covariance("layer0");
  spec.set_weight_clip("mse");
  spec.set_state_granularity("per_step");
  spec.set_tolerable_loss_percent(2.5);
  auto o = QuantizeOptionsFromProto(spec);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->preset, "quarot");
  EXPECT_EQ(o->bits, "w4a8");
  EXPECT_EQ(o->scope, "full");
  EXPECT_EQ(o->act_granularity, "per_tensor");
  EXPECT_EQ(o->num_samples, 7);
  EXPECT_EQ(o->seq_len, 33);
  EXPECT_EQ(o->eval_window, 65);
  EXPECT_EQ(o->seed, 1234567890123ull);
  EXPECT_FALSE(o->klt_r1);
  EXPECT_FALSE(o->klt_r5);
  EXPECT_FALSE(o->online_r2);
  EXPECT_FALSE(o->smooth_s2);
  EXPECT_FALSE(o->smooth_s4);
  EXPECT_EQ(o->act_percentile, 99.5);
  EXPECT_EQ(o->smooth_alpha, 0.35);
  EXPECT_TRUE(o->quantize_lm_head);
  EXPECT_FALSE(o->r1_cov_all_layers);
  EXPECT_EQ(o->weight_clip, "mse");
  EXPECT_EQ(o->state_granularity, "per_step");
  EXPECT_EQ(o->tolerable_loss_percent, 2.5);
  // Switches the message does not carry keep the engine's defaults.
  EXPECT_TRUE(o->smooth_s5);
  EXPECT_TRUE(o->smooth_conv);
  EXPECT_TRUE(o->model_dir.empty());
}

TEST(JobSpec, DefaultsAreTheEnginesAndTheServerStoresThem) {
  const quant::QuantizeOptions d;
  // The first accepted name of each choice is its default.
  EXPECT_EQ(d.preset, quant::kPresetNames[0]);
  EXPECT_EQ(d.bits, quant::kBitsNames[0]);
  EXPECT_EQ(d.scope, quant::kScopeNames[0]);
  EXPECT_EQ(d.act_granularity, quant::kActGranularityNames[0]);
  EXPECT_EQ(d.weight_clip, quant::kWeightClipNames[0]);
  EXPECT_EQ(d.state_granularity, quant::kStateGranularityNames[0]);
  EXPECT_TRUE(d.r1_cov_all_layers);
  QuantSpec spec = BaseSpec();
  ASSERT_TRUE(server::NormalizeQuantSpec(&spec).ok());
  EXPECT_EQ(spec.preset(), d.preset);
  EXPECT_EQ(spec.bits(), d.bits);
  EXPECT_EQ(spec.scope(), d.scope);
  EXPECT_EQ(spec.act_granularity(), d.act_granularity);
  EXPECT_EQ(spec.weight_clip(), d.weight_clip);
  EXPECT_EQ(spec.state_granularity(), "");  // scope linear quantizes no state: nothing to show
  EXPECT_EQ(spec.r1_covariance(), "all_layers");
  EXPECT_EQ(spec.num_samples(), d.num_samples);
  EXPECT_EQ(spec.seq_len(), d.seq_len);
  EXPECT_EQ(spec.eval_window(), d.eval_window);
  EXPECT_FALSE(spec.has_act_percentile());  // optional: unset means the engine's default
  // Normalizing twice changes nothing (a stored spec is resubmitted as is).
  QuantSpec again = spec;
  ASSERT_TRUE(server::NormalizeQuantSpec(&again).ok());
  EXPECT_EQ(again.SerializeAsString(), spec.SerializeAsString());
}

// Fields only the message has: the r1_covariance and backend names, a budget the client set to 0
// (the engine reads 0 as "no budget requested"), and the references and output name.
// A refused choice is echoed escaped: a raw newline or ESC from the client would forge lines on
// the terminal of whoever reads the error (mqctl prints it).
TEST(JobSpec, RefusedChoicesAreEchoedEscaped) {
  const std::string evil = "a\nts=2026 level=info msg=\"FORGED\"\x1b[2J\xff";
  const std::vector<std::pair<std::function<void(QuantSpec&)>, std::string>> cases = {
      {[&](QuantSpec& s) { s.set_preset(evil); }, "preset"},
      {[&](QuantSpec& s) { s.set_bits(evil); }, "bits"},
      {[&](QuantSpec& s) { s.set_scope(evil); }, "scope"},
      {[&](QuantSpec& s) { s.set_backend(evil); }, "backend"},
      {[&](QuantSpec& s) { s.set_r1_covariance(evil); }, "r1_covariance"},
  };
  for (const auto& [mutate, field] : cases) {
    SCOPED_TRACE(field);
    QuantSpec spec = BaseSpec();
    mutate(spec);
    const absl::Status s = server::NormalizeQuantSpec(&spec);
    ASSERT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    const std::string m(s.message());
    EXPECT_NE(m.find(field), std::string::npos) << m;
    for (const char bad : {'\n', '\x1b', '\xff'}) EXPECT_EQ(m.find(bad), std::string::npos) << m;
    EXPECT_NE(m.find("a\\x0ats=2026"), std::string::npos) << m;
  }
}

TEST(JobSpec, MessageOnlyFieldsAreRefusedByName) {
  const std::vector<std::pair<std::function<void(QuantSpec&)>, std::string>> cases = {
      {[](QuantSpec& s) { s.set_r1_covariance("layer7"); }, "spec.r1_covariance"},
      {[](QuantSpec& s) { s.set_backend("tpu"); }, "spec.backend"},
      {[](QuantSpec& s) { s.set_tolerable_loss_percent(0.0); }, "spec.tolerable_loss_percent"},
      {[](QuantSpec& s) { s.set_model(""); }, "spec.model"},
      {[](QuantSpec& s) { s.set_calib_dataset("bad name"); }, "spec.calib_dataset"},
      {[](QuantSpec& s) { s.set_eval_dataset("x:0:1"); }, "spec.eval_dataset"},
      {[](QuantSpec& s) { s.set_output_name("x/y"); }, "spec.output_name"},
  };
  for (const auto& [mutate, field] : cases) {
    SCOPED_TRACE(field);
    QuantSpec spec = BaseSpec();
    mutate(spec);
    const absl::Status s = server::NormalizeQuantSpec(&spec);
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    EXPECT_NE(s.message().find(field), std::string::npos) << s;
  }
  for (const char* backend : {"cpu", "cuda"}) {
    QuantSpec spec = BaseSpec();
    spec.set_backend(backend);
    EXPECT_TRUE(server::NormalizeQuantSpec(&spec).ok()) << backend;
  }
  for (const char* cov : {"all_layers", "layer0"}) {
    QuantSpec spec = BaseSpec();
    spec.set_r1_covariance(cov);
    EXPECT_TRUE(server::NormalizeQuantSpec(&spec).ok()) << cov;
  }
  // A long refused name is echoed bounded (it comes from the network).
  QuantSpec spec = BaseSpec();
  spec.set_preset(std::string(100000, 'x'));
  const absl::Status s = server::NormalizeQuantSpec(&spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_LT(s.message().size(), 300u) << s.message().size();
}

// Once the model is known: a Vim classifier has no accuracy-driven mode, and the server says so at
// submission as the worker's engine would (not after the worker fetched the blobs).
TEST(JobSpec, AVimJobHasNoAccuracyDrivenModeOrMixedPrecisionOnBothSides) {
  QuantSpec spec = BaseSpec();
  spec.set_tolerable_loss_percent(2.0);
  ASSERT_TRUE(server::NormalizeQuantSpec(&spec).ok());
  const absl::Status vim = server::CheckQuantSpecForModel(spec, "vim");
  EXPECT_EQ(vim.code(), absl::StatusCode::kInvalidArgument) << vim;
  EXPECT_NE(vim.message().find("spec.tolerable_loss_percent"), std::string::npos) << vim;
  EXPECT_TRUE(server::CheckQuantSpecForModel(spec, "mamba").ok());
  quant::QuantizeOptions o;
  o.tolerable_loss_percent = 2.0;
  EXPECT_EQ(quant::ValidateJobOptions(o, quant::JobModel::kVim).code(), StatusCode::kInvalidArgument);
  EXPECT_TRUE(quant::ValidateJobOptions(o, quant::JobModel::kText).ok());
  // Nor mixed precision: a Vim export holds one weight width.
  QuantSpec mixed = BaseSpec();
  mixed.set_bits("w4a8");
  mixed.add_w8_layers(0);
  ASSERT_TRUE(server::NormalizeQuantSpec(&mixed).ok());
  const absl::Status vim_mixed = server::CheckQuantSpecForModel(mixed, "vim");
  EXPECT_EQ(vim_mixed.code(), absl::StatusCode::kInvalidArgument) << vim_mixed;
  EXPECT_NE(vim_mixed.message().find("spec.w8_layers"), std::string::npos) << vim_mixed;
  EXPECT_TRUE(server::CheckQuantSpecForModel(mixed, "mamba").ok());
  // Everything else a Vim job takes as a text job does.
  spec.clear_tolerable_loss_percent();
  spec.set_scope("full");
  spec.set_state_granularity("per_step");
  EXPECT_TRUE(server::CheckQuantSpecForModel(spec, "vim").ok());
}

// A state granularity with a scope that quantizes no state would be ignored: the server refuses
// it at submission, mqctl before sending, mq-engine on its flags (one check:
// quant::CheckStateGranularityScope). A stored spec is not re-judged (the worker's adapter).
TEST(JobSpec, StateGranularityOutsideScopeFullIsRefusedWhereItIsAsked) {
  QuantSpec spec = BaseSpec();
  spec.set_state_granularity("per_step");
  absl::Status s = server::NormalizeQuantSpec(&spec);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("spec.state_granularity"), std::string::npos) << s;
  EXPECT_NE(s.message().find("scope is linear"), std::string::npos) << s;
  spec.set_scope("full");
  EXPECT_TRUE(server::NormalizeQuantSpec(&spec).ok());
  EXPECT_EQ(spec.state_granularity(), "per_step");
  QuantSpec full = BaseSpec();
  full.set_scope("full");
  ASSERT_TRUE(server::NormalizeQuantSpec(&full).ok());
  EXPECT_EQ(full.state_granularity(), quant::QuantizeOptions().state_granularity);  // shown where it applies
  EXPECT_TRUE(quant::CheckStateGranularityScope(false, "linear").ok());
  EXPECT_FALSE(quant::CheckStateGranularityScope(true, "linear").ok());
  // A spec stored before this check (linear with the default filled in) still builds its options.
  QuantSpec stored = BaseSpec();
  stored.set_scope("linear");
  stored.set_state_granularity("per_step_channel");
  EXPECT_TRUE(QuantizeOptionsFromProto(stored).ok());
}

// mqctl runs the same check before it sends: a bad spec is refused offline (no server listens on
// the port, so a message that reached the network would be UNAVAILABLE), a good one is sent.
TEST(JobSpec, MqctlRefusesABadSpecBeforeSending) {
  const std::string server = "127.0.0.1:" + std::to_string(test::PickFreePort());
  auto submit = [&](const std::string& flags) {
    std::string out;
    test::RunCommand({"/bin/sh", "-c", std::string(MQCTL_BIN) + " --insecure --server " + server +
                                           " jobs submit --model m --calib c " + flags + " 2>&1"},
                     &out);
    return out;
  };
  const std::string state = submit("--state-granularity per_step");
  EXPECT_NE(state.find("INVALID_ARGUMENT: spec.state_granularity"), std::string::npos) << state;
  const std::string bad = submit("--seq-len 1");
  EXPECT_NE(bad.find("INVALID_ARGUMENT: spec.seq_len must be in [2, 65536]; got 1"), std::string::npos) << bad;
  const std::string nan = submit("--preset rtn --act-percentile nan");
  EXPECT_NE(nan.find("INVALID_ARGUMENT: spec.act_percentile"), std::string::npos) << nan;
  const std::string good = submit("--seq-len 2");
  EXPECT_NE(good.find("UNAVAILABLE"), std::string::npos) << good;  // accepted, then no server
  const std::string repeat = submit("--bits w4a8 --w8-layers 1,1");
  EXPECT_NE(repeat.find("INVALID_ARGUMENT: spec.w8_layers names layer 1 twice"), std::string::npos) << repeat;
  const std::string junk = submit("--bits w4a8 --w8-layers 1,x");
  EXPECT_NE(junk.find("--w8-layers"), std::string::npos) << junk;
  EXPECT_EQ(junk.find("UNAVAILABLE"), std::string::npos) << junk;
  const std::string mixed = submit("--bits w4a8 --w8-layers 0,3");
  EXPECT_NE(mixed.find("UNAVAILABLE"), std::string::npos) << mixed;
}

// The command-line form of w8_layers, one parser for mq-engine and mqctl.
TEST(JobSpec, LayerListsParseStrictly) {
  EXPECT_EQ(*quant::ParseLayerList("0,5,7"), (std::vector<int>{0, 5, 7}));
  EXPECT_EQ(*quant::ParseLayerList("3"), (std::vector<int>{3}));
  EXPECT_TRUE(quant::ParseLayerList("")->empty());
  for (const char* bad : {"1,", ",1", "1,,2", "a", "1.5", "-1", " 1", "1 ", "+1", "1024", "99999999999999999999", "0x1"}) {
    auto r = quant::ParseLayerList(bad);
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    if (!r.ok()) EXPECT_NE(r.status().message().find("w8_layers"), std::string::npos) << r.status().message();
  }
}

}  // namespace
}  // namespace mq
