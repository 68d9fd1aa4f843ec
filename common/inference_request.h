// The one conversion of the public inference messages (GenerateRequest, ScoreRequest) into the
// engine's request contract (serve/generation_params.h), with its validation. The server calls it
// to refuse a bad request before routing, the worker to build what it runs: both get the same
// defaults, the same ranges and the same messages.
#pragma once

#include "absl/status/statusor.h"
#include "mambaquant/v1/inference.pb.h"
#include "serve/generation_params.h"

namespace mq {

struct GenerationRequestParams {
  serve::GenerationParams params;
  bool seed_given = false;
};

// Unset numbers take the documented defaults (max_new_tokens 16, n 1, top_p 1, repetition 1);
// INVALID_ARGUMENT names the field and its range. Does not look at the prompt.
absl::StatusOr<GenerationRequestParams> GenerationParamsFromProto(const mambaquant::v1::GenerateRequest& request);

// INVALID_ARGUMENT unless exactly one prompt form is set and token ids are non-negative.
absl::Status CheckGeneratePrompt(const mambaquant::v1::GenerateRequest& request);
// INVALID_ARGUMENT unless the text or tokens are set and top_logprobs is in range.
absl::Status CheckScoreRequest(const mambaquant::v1::ScoreRequest& request);

// mq::Status codes equal absl's numerically (both mirror gRPC's).
absl::Status ToAbslStatus(const Status& s);

}  // namespace mq
