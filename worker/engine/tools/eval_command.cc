// mq-engine eval: perplexity of a model (float or quantized) on a text, by the fixtures' protocol.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "model/model_loader.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {

int RunEvalCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"}, {"model", "text", "window"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto text_path = cl->Require("text");
  auto window = cl->GetInt("window", 256, 2, 1 << 20);
  for (const Status& s : {model_dir.status(), text_path.status(), window.status()})
    if (!s.ok()) return ReportError(s);

  const auto t0 = std::chrono::steady_clock::now();
  auto model = LoadModel(*model_dir);
  if (!model.ok()) return ReportError(model.status());
  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto text = ReadTextFile(*text_path);
  if (!text.ok()) return ReportError(text.status());
  auto tokens = TokenizeDocuments(*tokenizer, *text, static_cast<int32_t>(model->weights.config.eos_token_id));
  if (!tokens.ok()) return ReportError(tokens.status());
  auto result = EvaluatePerplexity(model->weights, *tokens, *window);
  if (!result.ok()) return ReportError(result.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (cl->Has("json")) {
    nlohmann::json j = {{"model", *model_dir},         {"text", *text_path},
                        {"perplexity", result->perplexity}, {"mean_nll", result->mean_nll},
                        {"tokens_total", tokens->size()},   {"tokens_scored", result->tokens_scored},
                        {"windows", result->windows},       {"window", *window},
                        {"quantized", model->quantized},    {"seconds", seconds}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model        %s%s\n", model_dir->c_str(), model->quantized ? " (quantized)" : "");
    std::printf("tokens       %zu (%lld windows of %lld, %lld predictions scored)\n", tokens->size(),
                static_cast<long long>(result->windows), static_cast<long long>(*window),
                static_cast<long long>(result->tokens_scored));
    std::printf("perplexity   %.4f\n", result->perplexity);
    std::printf("time         %.2f s\n", seconds);
  }
  return 0;
}

}  // namespace mq::tools
