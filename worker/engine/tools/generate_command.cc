// mq-engine generate: greedy or sampled continuation of a prompt, through the same serving loop
// (serve::ServingEngine) and device backends the worker serves with, so that `mq-engine generate`
// and a Generate call through the service run the same code on the same device.
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <utility>

#include <nlohmann/json.hpp>

#include "serve/cpu_sequence_backend.h"
#include "serve/serving_engine.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#if defined(MQ_HAVE_CUDA)
#include "cuda/cuda_sequence_backend.h"
#endif

namespace mq::tools {

StatusOr<std::unique_ptr<serve::SequenceBackend>> OpenSequenceBackend(const std::string& device, const std::string& dir,
                                                                     const serve::SequenceBackendOptions& o) {
  if (device == "cpu") {
    MQ_ASSIGN_OR_RETURN(auto b, serve::CpuSequenceBackend::Open(dir, o));
    return std::unique_ptr<serve::SequenceBackend>(std::move(b));
  }
  if (device != "cuda") return InvalidArgumentError("--device must be cpu or cuda, not '" + device + "'");
#if defined(MQ_HAVE_CUDA)
  MQ_ASSIGN_OR_RETURN(auto b, cuda::CudaSequenceBackend::Open(dir, o));
  return std::unique_ptr<serve::SequenceBackend>(std::move(b));
#else
  return UnavailableError("this build has no CUDA backend (built without a CUDA toolkit)");
#endif
}

int RunGenerateCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {"json"},
                               {"model", "prompt", "max-tokens", "temperature", "top-k", "top-p", "seed", "device", "state-dtype"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model_dir = cl->Require("model");
  auto prompt = cl->Require("prompt");
  auto max_tokens = cl->GetInt("max-tokens", 32, 1, serve::GenerationLimits::kMaxNewTokens);
  auto top_k = cl->GetInt("top-k", 0, 0, serve::GenerationLimits::kMaxTopK);
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  for (const Status& s : {model_dir.status(), prompt.status(), max_tokens.status(), top_k.status(), seed.status()})
    if (!s.ok()) return ReportError(s);
  serve::GenerationInput in;
  in.has_text = true;
  in.prompt_text = *prompt;
  in.params.max_new_tokens = static_cast<int32_t>(*max_tokens);
  in.params.sampling.top_k = static_cast<int32_t>(*top_k);
  in.params.sampling.seed = static_cast<uint64_t>(*seed);
  in.seed_given = true;
  for (const auto& [flag, dst] : {std::pair<const char*, float*>{"temperature", &in.params.sampling.temperature},
                                  std::pair<const char*, float*>{"top-p", &in.params.sampling.top_p}}) {
    if (auto v = cl->Get(flag)) {
      char* end = nullptr;
      *dst = std::strtof(v->c_str(), &end);
      if (end == v->c_str() || *end != '\0') return ReportError(InvalidArgumentError(std::string("--") + flag + " must be a number"));
    }
  }
  if (Status s = serve::ValidateGenerationParams(in.params); !s.ok()) return ReportError(s);

  auto tokenizer = Tokenizer::LoadFromFile((std::filesystem::path(*model_dir) / "tokenizer.json").string());
  if (!tokenizer.ok()) return ReportError(tokenizer.status());
  auto prompt_ids = tokenizer->Encode(*prompt);
  if (!prompt_ids.ok()) return ReportError(prompt_ids.status());
  if (prompt_ids->empty()) return ReportError(InvalidArgumentError("the prompt encodes to no tokens"));

  // One sequence: one slot, the whole prompt in one prefill chunk (as the reference does).
  serve::ServingOptions so;
  so.backend.num_slots = 1;
  so.backend.max_batch = 1;
  so.backend.max_prefill_tokens = std::max<int32_t>(16, static_cast<int32_t>(prompt_ids->size()));
  so.backend.max_logit_rows = 1;
  so.max_prompt_tokens = so.backend.max_prefill_tokens;
  auto state_dtype = ParseStateDtype(cl->Get("state-dtype").value_or("fp32"));
  if (!state_dtype.ok()) return ReportError(state_dtype.status());
  so.backend.state_dtype = *state_dtype;
  auto backend = OpenSequenceBackend(cl->Get("device").value_or("cpu"), *model_dir, so.backend);
  if (!backend.ok()) return ReportError(backend.status());
  auto engine = serve::ServingEngine::Create(std::move(*backend), std::make_shared<const Tokenizer>(std::move(*tokenizer)), so);
  if (!engine.ok()) return ReportError(engine.status());

  std::mutex mu;
  std::condition_variable cv;
  bool done = false;
  Status error;
  std::vector<int32_t> ids;
  std::string text, finish;
  Status submitted = (*engine)->SubmitGenerate(
      "generate", std::move(in),
      [&](serve::GenerationEvent&& e) {
        std::lock_guard<std::mutex> l(mu);
        ids.insert(ids.end(), e.token_ids.begin(), e.token_ids.end());
        text += e.text;
        if (!e.finish_reason.empty()) finish = e.finish_reason;
        if (e.call_done) {
          done = true;
          cv.notify_all();
        }
        return true;
      },
      [&](const Status& s) {
        std::lock_guard<std::mutex> l(mu);
        error = s;
        done = true;
        cv.notify_all();
      });
  if (!submitted.ok()) return ReportError(submitted);
  {
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
  }
  if (!error.ok()) return ReportError(error);
  // The printed continuation leaves out the eos that ended it (its text is empty anyway).
  if (finish == "eos" && !ids.empty()) ids.pop_back();
  if (cl->Has("json")) {
    nlohmann::json j = {{"prompt", *prompt}, {"prompt_ids", *prompt_ids}, {"ids", ids}, {"text", text},
                        {"finish_reason", finish}, {"device", (*engine)->backend().device()}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("%s\n", text.c_str());
  }
  return 0;
}

}  // namespace mq::tools
