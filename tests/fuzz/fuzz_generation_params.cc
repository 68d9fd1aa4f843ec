// The request contract (serve/generation_params): any combination of field values is accepted
// or refused with INVALID_ARGUMENT, and what is accepted is within the documented ranges.
#include <cmath>
#include <cstdint>

#include "fuzz_check.h"
#include "fuzz_input.h"
#include "serve/generation_params.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using mq::serve::GenerationLimits;
  mq::fuzz::FuzzInput in(data, size);
  mq::serve::GenerationParams p;
  p.max_new_tokens = in.Take<int32_t>();
  p.min_tokens = in.Take<int32_t>();
  p.sampling.temperature = in.Take<float>();
  p.sampling.top_p = in.Take<float>();
  p.sampling.top_k = in.Take<int32_t>();
  p.sampling.min_p = in.Take<float>();
  p.sampling.repetition_penalty = in.Take<float>();
  p.sampling.presence_penalty = in.Take<float>();
  p.sampling.frequency_penalty = in.Take<float>();
  p.sampling.seed = in.Take<uint64_t>();
  p.ignore_eos = in.TakeBool();
  if (in.TakeBool()) p.logprobs = in.Take<int32_t>();
  p.n = in.Take<int32_t>();
  const int stops = in.Take<uint8_t>() % 24;
  for (int i = 0; i < stops && in.remaining() > 0; ++i) p.stop.push_back(in.TakeString(300));
  const int stop_ids = in.Take<uint8_t>() % 80;
  for (int i = 0; i < stop_ids && in.remaining() > 0; ++i) p.stop_token_ids.push_back(in.Take<int32_t>());
  const int64_t vocab = in.Take<uint16_t>();

  const mq::Status s = mq::serve::ValidateGenerationParams(p);
  if (!s.ok()) {
    MQ_FUZZ_CHECK(s.code() == mq::StatusCode::kInvalidArgument);
    return 0;
  }
  MQ_FUZZ_CHECK(p.max_new_tokens >= 0 && p.max_new_tokens <= GenerationLimits::kMaxNewTokens);
  MQ_FUZZ_CHECK(p.n >= 1 && p.n <= GenerationLimits::kMaxCompletions);
  MQ_FUZZ_CHECK(std::isfinite(p.sampling.temperature) && p.sampling.temperature >= 0 &&
                p.sampling.temperature <= GenerationLimits::kMaxTemperature);
  MQ_FUZZ_CHECK(p.sampling.top_p > 0 && p.sampling.top_p <= 1);
  MQ_FUZZ_CHECK(p.stop.size() <= static_cast<size_t>(GenerationLimits::kMaxStopStrings));
  MQ_FUZZ_CHECK(!p.logprobs || (*p.logprobs >= 0 && *p.logprobs <= GenerationLimits::kMaxLogprobs));
  const mq::Status m = mq::serve::ValidateForModel(p, vocab);
  if (m.ok())
    for (int32_t id : p.stop_token_ids) MQ_FUZZ_CHECK(id >= 0 && id < vocab);
  return 0;
}
