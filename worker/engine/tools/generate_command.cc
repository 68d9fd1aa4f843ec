// mq-engine generate: greedy or sampled continuation of a prompt.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <utility>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "eval/generation.h"
#include "model/model_loader.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {

int RunGenerateCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"}, {"model", "prompt", "max-tokens", "temperature", "top-k", "top-p", "seed"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto prompt = cl->Require("prompt");
  auto max_tokens = cl->GetInt("max-tokens", 32, 1, 1 << 16);
  auto top_k = cl->GetInt("top-k", 0, 0, 1 << 30);
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  for (const Status& s : {model_dir.status(), prompt.status(), max_tokens.status(), top_k.status(), seed.status()})
    if (!s.ok()) return ReportError(s);
  GenerationOptions go;
  go.max_new_tokens = *max_tokens;
  go.sampling.top_k = static_cast<int32_t>(*top_k);
  go.sampling.seed = static_cast<uint64_t>(*seed);
  for (const auto& [flag, dst] : {std::pair<const char*, float*>{"temperature", &go.sampling.temperature},
                                  std::pair<const char*, float*>{"top-p", &go.sampling.top_p}}) {
    if (auto v = cl->Get(flag)) {
      char* end = nullptr;
      *dst = std::strtof(v->c_str(), &end);
      if (end == v->c_str() || *end != '\0') return ReportError(InvalidArgumentError(std::string("--") + flag + " must be a number"));
    }
  }
  if (Status s = ValidateSampling(go.sampling); !s.ok()) return ReportError(s);
  auto model = LoadModel(*model_dir);
  if (!model.ok()) return ReportError(model.status());
  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto ids = tokenizer->Encode(*prompt);
  if (!ids.ok()) return ReportError(ids.status());
  if (ids->empty()) return ReportError(InvalidArgumentError("the prompt encodes to no tokens"));
  go.eos_id = static_cast<int32_t>(model->weights.config.eos_token_id);
  auto out = Generate(model->weights, {*ids}, go);
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
