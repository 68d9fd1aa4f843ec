// mq-engine eval: perplexity of a model (float or quantized) on a text, by the fixtures' protocol:
// by prefill on the CPU reference, or (--decode-steps) one decode step a token through a serving
// backend, with the recurrent state stored in --state-dtype between steps.
#include <chrono>
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "eval/perplexity.h"
#include "model/model_loader.h"
#include "serve/sequence_backend.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tokenizer/document_stream.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {

int RunEvalCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json", "decode-steps"}, {"model", "text", "window", "state-dtype", "device", "batch", "max-windows"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto text_path = cl->Require("text");
  auto window = cl->GetInt("window", 256, 2, 1 << 20);
  auto batch = cl->GetInt("batch", 8, 1, 4096);
  auto max_windows = cl->GetInt("max-windows", 0, 0, 1 << 20);  // 0: every window of the text
  auto state_dtype = ParseStateDtype(cl->Get("state-dtype").value_or("fp32"));
  for (const Status& s : {model_dir.status(), text_path.status(), window.status(), batch.status(), state_dtype.status(), max_windows.status()})
    if (!s.ok()) return ReportError(s);
  const bool decode_steps = cl->Has("decode-steps");
  const std::string device = cl->Get("device").value_or("cpu");
  if (!decode_steps && (cl->Has("state-dtype") || cl->Has("device") || cl->Has("batch")))
    return ReportError(InvalidArgumentError("--state-dtype, --device and --batch apply to --decode-steps"));

  const auto t0 = std::chrono::steady_clock::now();
  auto model = LoadModel(*model_dir);
  if (!model.ok()) return ReportError(model.status());
  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto text = ReadTextFile(*text_path);
  if (!text.ok()) return ReportError(text.status());
  auto tokens = TokenizeDocuments(*tokenizer, *text, static_cast<int32_t>(model->weights.config.eos_token_id));
  if (!tokens.ok()) return ReportError(tokens.status());
  // The first windows only (decode steps on the CPU take ~15× the prefill's time).
  if (*max_windows > 0 && static_cast<int64_t>(tokens->size()) > *max_windows * *window + 1)
    tokens->resize(static_cast<size_t>(*max_windows * *window + 1));
  StatusOr<PerplexityResult> result = InvalidArgumentError("unreached");
  if (decode_steps) {
    // Windows decode `batch` at a time, one slot each; no prefill, so one-row chunks suffice.
    serve::SequenceBackendOptions bo;
    bo.num_slots = static_cast<int32_t>(*batch);
    bo.max_batch = static_cast<int32_t>(*batch);
    bo.max_prefill_tokens = 16;
    bo.max_logit_rows = 1;
    bo.state_dtype = *state_dtype;
    auto backend = OpenSequenceBackend(device, *model_dir, bo);
    if (!backend.ok()) return ReportError(backend.status());
    result = EvaluateDecodePerplexity(**backend, *tokens, *window);
  } else {
    result = EvaluatePerplexity(model->weights, *tokens, *window);
  }
  if (!result.ok()) return ReportError(result.status());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  if (cl->Has("json")) {
    nlohmann::json j = {{"model", *model_dir},         {"text", *text_path},
                        {"perplexity", result->perplexity}, {"mean_nll", result->mean_nll},
                        {"tokens_total", tokens->size()},   {"tokens_scored", result->tokens_scored},
                        {"windows", result->windows},       {"window", *window},
                        {"quantized", model->quantized},    {"seconds", seconds},
                        {"mode", decode_steps ? "decode-steps" : "prefill"}};
    if (decode_steps) j["state_dtype"] = StateDtypeName(*state_dtype), j["device"] = device;
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("model        %s%s\n", model_dir->c_str(), model->quantized ? " (quantized)" : "");
    std::printf("tokens       %zu (%lld windows of %lld, %lld predictions scored)\n", tokens->size(),
                static_cast<long long>(result->windows), static_cast<long long>(*window),
                static_cast<long long>(result->tokens_scored));
    if (decode_steps)
      std::printf("mode         decode steps on %s, state %s\n", device.c_str(), StateDtypeName(*state_dtype));
    std::printf("perplexity   %.4f\n", result->perplexity);
    std::printf("time         %.2f s\n", seconds);
  }
  return 0;
}

}  // namespace mq::tools
