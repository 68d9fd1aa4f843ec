#include "inference_request.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace mq {

absl::Status ToAbslStatus(const Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

absl::StatusOr<GenerationRequestParams> GenerationParamsFromProto(const mambaquant::v1::GenerateRequest& r) {
  GenerationRequestParams out;
  serve::GenerationParams& p = out.params;
  if (r.max_new_tokens() != 0) p.max_new_tokens = r.max_new_tokens();
  p.min_tokens = r.min_tokens();
  const auto& s = r.sampling();
  p.sampling.temperature = s.temperature();
  if (s.top_p() != 0) p.sampling.top_p = s.top_p();
  p.sampling.top_k = s.top_k();
  p.sampling.min_p = s.min_p();
  if (s.repetition_penalty() != 0) p.sampling.repetition_penalty = s.repetition_penalty();
  p.sampling.presence_penalty = s.presence_penalty();
  p.sampling.frequency_penalty = s.frequency_penalty();
  out.seed_given = s.has_seed();
  p.sampling.seed = s.seed();
  p.stop.assign(r.stop().begin(), r.stop().end());
  p.stop_token_ids.assign(r.stop_token_ids().begin(), r.stop_token_ids().end());
  p.ignore_eos = r.ignore_eos();
  if (r.has_logprobs()) p.logprobs = r.logprobs();
  if (r.n() != 0) p.n = r.n();
  absl::Status st = ToAbslStatus(serve::ValidateGenerationParams(p));
  if (!st.ok()) return st;
  return out;
}

absl::Status CheckGeneratePrompt(const mambaquant::v1::GenerateRequest& r) {
  switch (r.input_case()) {
    case mambaquant::v1::GenerateRequest::kPrompt:
      if (r.prompt().empty()) return absl::InvalidArgumentError("the prompt is empty");
      return absl::OkStatus();
    case mambaquant::v1::GenerateRequest::kPromptTokens:
      if (r.prompt_tokens().ids().empty()) return absl::InvalidArgumentError("prompt_tokens is empty");
      for (int32_t id : r.prompt_tokens().ids())
        if (id < 0) return absl::InvalidArgumentError(absl::StrCat("prompt token id ", id, " is negative"));
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("set prompt or prompt_tokens");
  }
}

absl::Status CheckScoreRequest(const mambaquant::v1::ScoreRequest& r) {
  if (r.top_logprobs() < 0 || r.top_logprobs() > serve::GenerationLimits::kMaxLogprobs)
    return absl::InvalidArgumentError(absl::StrCat("top_logprobs must be in [0, ", serve::GenerationLimits::kMaxLogprobs, "], got ", r.top_logprobs()));
  switch (r.input_case()) {
    case mambaquant::v1::ScoreRequest::kText:
      if (r.text().empty()) return absl::InvalidArgumentError("the text is empty");
      return absl::OkStatus();
    case mambaquant::v1::ScoreRequest::kTokens:
      if (r.tokens().ids_size() < 2) return absl::InvalidArgumentError("scoring needs at least 2 tokens");
      for (int32_t id : r.tokens().ids())
        if (id < 0) return absl::InvalidArgumentError(absl::StrCat("token id ", id, " is negative"));
      return absl::OkStatus();
    default:
      return absl::InvalidArgumentError("set text or tokens");
  }
}

}  // namespace mq
