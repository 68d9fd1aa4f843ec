// mq-engine generate: greedy continuation of a prompt.
#include <cstdio>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "eval/generation.h"
#include "model/model_loader.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {

int RunGenerateCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"}, {"model", "prompt", "max-tokens"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto prompt = cl->Require("prompt");
  auto max_tokens = cl->GetInt("max-tokens", 32, 1, 1 << 16);
  for (const Status& s : {model_dir.status(), prompt.status(), max_tokens.status()})
    if (!s.ok()) return ReportError(s);
  auto model = LoadModel(*model_dir);
  if (!model.ok()) return ReportError(model.status());
  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto ids = tokenizer->Encode(*prompt);
  if (!ids.ok()) return ReportError(ids.status());
  if (ids->empty()) return ReportError(InvalidArgumentError("the prompt encodes to no tokens"));
  GenerationOptions go;
  go.max_new_tokens = *max_tokens;
  go.eos_id = static_cast<int32_t>(model->weights.config.eos_token_id);
  auto out = GreedyGenerate(model->weights, {*ids}, go);
  if (!out.ok()) return ReportError(out.status());
  std::vector<int32_t> continuation((*out)[0].begin() + static_cast<std::ptrdiff_t>(ids->size()), (*out)[0].end());
  // Drop the eos (and padding) from the printed text.
  while (!continuation.empty() && (continuation.back() == go.pad_id || continuation.back() == go.eos_id))
    continuation.pop_back();
  auto text = tokenizer->Decode(continuation);
  if (!text.ok()) return ReportError(text.status());
  if (cl->Has("json")) {
    nlohmann::json j = {{"prompt", *prompt}, {"prompt_ids", *ids}, {"ids", continuation}, {"text", *text}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", text->c_str());
  }
  return 0;
}

}  // namespace mq::tools
