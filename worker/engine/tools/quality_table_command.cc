// mq-engine quality-table: the quality table of docs/quantization.md. Builds every preset × bits
// × scope (plus extra seeds for the calibrated or randomized presets, and the cumulative
// mambaquant ablation in every bits × scope, at w4a8 ending in the output-aware clipping), then evaluates all of them against the float model in one pass over
// the evaluation text, and writes a Markdown table and a JSON file.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "quant/quantize_pipeline.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {
namespace {

struct Row {
  std::string group;  // "grid", "seed", "ablation", "r1-covariance"
  std::string label;
  quant::QuantizeOptions options;
  double build_seconds = 0;
};

std::vector<Row> TableRows(const quant::QuantizeOptions& base, const std::vector<uint64_t>& seeds,
                           const std::string& ablation_bits) {
  std::vector<Row> rows;
  auto make = [&](const std::string& group, const std::string& preset, const std::string& bits, const std::string& scope,
                  uint64_t seed) {
    Row r;
    r.group = group;
    r.options = base;
    r.options.preset = preset;
    r.options.bits = bits;
    r.options.scope = scope;
    r.options.seed = seed;
    r.label = preset;
    return r;
  };
  // Every preset at every seed, except rtn: with dynamic activations it uses neither calibration
  // nor randomness, so every seed gives the same model.
  for (const char* scope : {"linear", "full"})
    for (const char* bits : {"w8a8", "w4a8"})
      for (const char* preset : {"rtn", "smoothquant", "quarot", "mambaquant"}) {
        rows.push_back(make("grid", preset, bits, scope, seeds[0]));
        if (std::string(preset) != "rtn")
          for (size_t i = 1; i < seeds.size(); ++i) rows.push_back(make("seed", preset, bits, scope, seeds[i]));
      }
  // Ablation, cumulative from the Hadamard base (R1, R5) to mambaquant less its last component
  // (the grid row is the whole method): + KLT (R1, R5), + S5, + online R2, + S2; in scope full
  // also + S4/R4, + S3. At w4a8 these rows clip weights by the plain per-row MSE search and the
  // last transform is a row of its own: the whole method adds output-aware clipping.
  for (const char* scope : {"linear", "full"})
    for (const char* bits : {"w8a8", "w4a8"}) {
      if (ablation_bits != "all" && ablation_bits != bits) continue;
      Row r = make("ablation", "mambaquant", bits, scope, seeds[0]);
      quant::QuantizeOptions& o = r.options;
      o.klt_r1 = o.klt_r5 = o.smooth_s5 = o.online_r2 = o.smooth_s2 = o.smooth_s4 = o.smooth_conv = false;
      const bool full = std::string(scope) == "full", w4 = std::string(bits) == "w4a8";
      const std::string clip = w4 ? ", mse clip" : "";
      if (w4) o.weight_clip = "mse";
      std::vector<std::pair<const char*, bool quant::QuantizeOptions::*>> steps = {
          {"+KLT (R1,R5)", nullptr}, {"+S5", &quant::QuantizeOptions::smooth_s5},
          {"+online R2", &quant::QuantizeOptions::online_r2}, {"+S2", &quant::QuantizeOptions::smooth_s2}};
      if (full) {
        steps.push_back({"+S4,R4", &quant::QuantizeOptions::smooth_s4});
        steps.push_back({"+S3", &quant::QuantizeOptions::smooth_conv});
      }
      if (!w4) steps.pop_back();  // w8a8: the last step gives the grid row
      r.label = "hadamard (R1,R5)" + clip;
      rows.push_back(r);
      for (const auto& [label, flag] : steps) {
        if (flag == nullptr) {
          o.klt_r1 = o.klt_r5 = true;
        } else {
          o.*flag = true;
        }
        r.label = label + clip;
        rows.push_back(r);
      }
    }
  return rows;
}

std::string Fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

}  // namespace

int RunQualityTableCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {}, {"model", "calib", "eval", "samples", "seq-len", "seeds", "out-md", "out-json",
                                          "window", "act", "weight-clip", "label", "ablation", "eval-windows"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model = cl->Require("model");
  auto calib = cl->Require("calib");
  auto eval = cl->Require("eval");
  auto samples = cl->GetInt("samples", 128, 1, 65536);
  auto seq_len = cl->GetInt("seq-len", 256, 2, 65536);
  auto window = cl->GetInt("window", 256, 2, 1 << 20);
  // 0: every window of the text; else only the first N (a cheaper, noisier table).
  auto eval_windows = cl->GetInt("eval-windows", 0, 0, 1 << 20);
  const std::string ablation = cl->Get("ablation").value_or("all");
  if (ablation != "all" && ablation != "none" && ablation != "w8a8" && ablation != "w4a8")
    return ReportError(InvalidArgumentError("--ablation must be all, none, w8a8 or w4a8"));
  if (!eval_windows.ok()) return ReportError(eval_windows.status());
  for (const Status& s : {model.status(), calib.status(), eval.status(), samples.status(), seq_len.status(), window.status()})
    if (!s.ok()) return ReportError(s);
  std::vector<uint64_t> seeds;
  {
    std::string list = cl->Get("seeds").value_or("0,1");
    std::stringstream ss(list);
    std::string item;
    while (std::getline(ss, item, ','))
      try {
        seeds.push_back(std::stoull(item));
      } catch (const std::exception&) {
        return ReportError(InvalidArgumentError("--seeds: \"" + item + "\" is not a number"));
      }
    if (seeds.empty()) return ReportError(InvalidArgumentError("--seeds is empty"));
  }
  quant::QuantizeOptions base;
  base.model_dir = *model;
  base.calib_text_path = *calib;
  base.num_samples = static_cast<int>(*samples);
  base.seq_len = static_cast<int>(*seq_len);
  base.act_granularity = cl->Get("act").value_or("per_token");
  base.weight_clip = cl->Get("weight-clip").value_or("auto");

  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto text = ReadTextFile(*eval);
  if (!text.ok()) return ReportError(text.status());

  std::vector<Row> rows = TableRows(base, seeds, ablation);
  std::vector<MambaWeights> models;
  models.reserve(rows.size());
  MambaWeights original;
  for (size_t i = 0; i < rows.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto b = quant::BuildQuantizedModel(rows[i].options, nullptr);
    if (!b.ok()) return ReportError(b.status().WithContext(rows[i].label));
    rows[i].build_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "[%zu/%zu] built %s %s %s seed %llu in %.1f s\n", i + 1, rows.size(), rows[i].label.c_str(),
                 rows[i].options.bits.c_str(), rows[i].options.scope.c_str(),
                 static_cast<unsigned long long>(rows[i].options.seed), rows[i].build_seconds);
    if (i == 0) original = std::move(b->original);
    models.push_back(std::move(b->model));
  }
  auto tokens = TokenizeDocuments(*tokenizer, *text, static_cast<int32_t>(original.config.eos_token_id));
  if (!tokens.ok()) return ReportError(tokens.status());
  if (*eval_windows > 0 && static_cast<int64_t>(tokens->size()) > *eval_windows * *window + 1)
    tokens->resize(static_cast<size_t>(*eval_windows * *window + 1));
  std::vector<const MambaWeights*> candidates;
  for (const auto& m : models) candidates.push_back(&m);
  const auto t0 = std::chrono::steady_clock::now();
  auto results = CompareModels(original, candidates, *tokens, *window, [&](int64_t done, int64_t total) {
    std::fprintf(stderr, "\reval %lld/%lld windows", static_cast<long long>(done), static_cast<long long>(total));
    return true;
  });
  std::fprintf(stderr, "\n");
  if (!results.ok()) return ReportError(results.status());
  const double eval_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  nlohmann::json j = {{"model", *model}, {"calib", *calib}, {"eval", *eval}, {"samples", *samples},
                      {"seq_len", *seq_len}, {"window", *window}, {"eval_windows", *eval_windows}, {"seeds", seeds},
                      {"activation_granularity", base.act_granularity}, {"weight_clip", base.weight_clip},
                      {"float_perplexity", (*results)[0].reference.perplexity},
                      {"tokens_scored", (*results)[0].reference.tokens_scored}, {"eval_seconds", eval_seconds},
                      {"rows", nlohmann::json::array()}};
  std::ostringstream md;
  // The model's label ("plain", "outlier"; --label) starts every row, so tables of several models concatenate.
  const std::string label = cl->Get("label").value_or("model");
  j["label"] = label;
  md << "| model | group | method | bits | scope | seed | perplexity | Δ% | top-1 agreement | mean KL | build s |\n"
     << "|---|---|---|---|---|---|---|---|---|---|---|\n";
  md << "| " << label << " | float | float32 | - | - | - | " << Fmt("%.3f", (*results)[0].reference.perplexity) << " | 0 | 1 | 0 | - |\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const ComparisonResult& c = (*results)[i];
    const double delta = 100.0 * (c.candidate.perplexity / c.reference.perplexity - 1.0);
    md << "| " << label << " | " << rows[i].group << " | " << rows[i].label << " | " << rows[i].options.bits << " | "
       << rows[i].options.scope << " | " << rows[i].options.seed << " | " << Fmt("%.3f", c.candidate.perplexity)
       << " | " << Fmt("%+.3f", delta) << " | " << Fmt("%.4f", c.top1_agreement) << " | " << Fmt("%.5f", c.mean_kl)
       << " | " << Fmt("%.1f", rows[i].build_seconds) << " |\n";
    j["rows"].push_back({{"group", rows[i].group}, {"method", rows[i].label}, {"bits", rows[i].options.bits},
                         {"scope", rows[i].options.scope}, {"seed", rows[i].options.seed},
                         {"perplexity", c.candidate.perplexity}, {"delta_percent", delta},
                         {"top1_agreement", c.top1_agreement}, {"mean_kl", c.mean_kl},
                         {"build_seconds", rows[i].build_seconds}});
  }
  std::printf("%s", md.str().c_str());
  if (auto p = cl->Get("out-md")) std::ofstream(*p) << md.str();
  if (auto p = cl->Get("out-json")) std::ofstream(*p) << j.dump(2) << "\n";
  return 0;
}

}  // namespace mq::tools
