#include "serve/generation_params.h"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>

#include "tokenizer/utf8.h"

namespace mq::serve {
namespace {

// "%g" prints 250 as "250" and NaN as "nan": the value the client sent, readable.
std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%g", v);
  return buf;
}

Status OutOfRange(const std::string& field, const std::string& range, double got) {
  return InvalidArgumentError(field + " must be in " + range + ", got " + Num(got));
}

// Closed range [lo, hi]; NaN and infinities fail (the comparisons are false for NaN).
Status CheckClosed(const char* field, double v, double lo, double hi) {
  if (std::isfinite(v) && v >= lo && v <= hi) return OkStatus();
  std::string range = "[";  // appended, not "[" + ...: GCC 12 warns falsely (-Wrestrict) on that
  range += Num(lo) + ", " + Num(hi) + "]";
  return OutOfRange(field, range, v);
}

// Integer fields print as integers ("1000000", not "1e+06").
Status CheckIntClosed(const char* field, int64_t v, int64_t lo, int64_t hi) {
  if (v >= lo && v <= hi) return OkStatus();
  return InvalidArgumentError(std::string(field) + " must be in [" + std::to_string(lo) + ", " + std::to_string(hi) +
                              "], got " + std::to_string(v));
}

// Half-open (0, hi].
Status CheckPositiveUpTo(const char* field, double v, double hi) {
  if (std::isfinite(v) && v > 0 && v <= hi) return OkStatus();
  return OutOfRange(field, "(0, " + Num(hi) + "]", v);
}

}  // namespace

Status ValidateGenerationParams(const GenerationParams& p) {
  using L = GenerationLimits;
  MQ_RETURN_IF_ERROR(CheckIntClosed("max_new_tokens", p.max_new_tokens, 1, L::kMaxNewTokens));
  if (p.min_tokens < 0 || p.min_tokens > p.max_new_tokens) {
    return InvalidArgumentError("min_tokens must be in [0, max_new_tokens = " + std::to_string(p.max_new_tokens) +
                                "], got " + std::to_string(p.min_tokens));
  }
  const SamplingParams& s = p.sampling;
  MQ_RETURN_IF_ERROR(CheckClosed("temperature", s.temperature, 0, L::kMaxTemperature));
  MQ_RETURN_IF_ERROR(CheckPositiveUpTo("top_p", s.top_p, 1));
  MQ_RETURN_IF_ERROR(CheckIntClosed("top_k", s.top_k, 0, L::kMaxTopK));
  MQ_RETURN_IF_ERROR(CheckClosed("min_p", s.min_p, 0, 1));
  MQ_RETURN_IF_ERROR(CheckPositiveUpTo("repetition_penalty", s.repetition_penalty, L::kMaxRepetitionPenalty));
  MQ_RETURN_IF_ERROR(CheckClosed("presence_penalty", s.presence_penalty, -L::kMaxAbsPresencePenalty,
                                 L::kMaxAbsPresencePenalty));
  MQ_RETURN_IF_ERROR(CheckClosed("frequency_penalty", s.frequency_penalty, -L::kMaxAbsPresencePenalty,
                                 L::kMaxAbsPresencePenalty));

  if (p.stop.size() > static_cast<size_t>(L::kMaxStopStrings)) {
    return InvalidArgumentError("stop must hold at most " + std::to_string(L::kMaxStopStrings) + " strings, got " +
                                std::to_string(p.stop.size()));
  }
  for (size_t i = 0; i < p.stop.size(); ++i) {
    const std::string& stop = p.stop[i];
    const std::string field = "stop[" + std::to_string(i) + "]";
    if (stop.empty() || stop.size() > static_cast<size_t>(L::kMaxStopStringBytes)) {
      return InvalidArgumentError(field + " must be 1.." + std::to_string(L::kMaxStopStringBytes) +
                                  " bytes long, got " + std::to_string(stop.size()));
    }
    if (const size_t bad = utf8::FindInvalid(stop); bad != utf8::kValid) {
      return InvalidArgumentError(field + " must be valid UTF-8, ill-formed at byte " + std::to_string(bad));
    }
  }

  if (p.stop_token_ids.size() > static_cast<size_t>(L::kMaxStopTokenIds)) {
    return InvalidArgumentError("stop_token_ids must hold at most " + std::to_string(L::kMaxStopTokenIds) +
                                " ids, got " + std::to_string(p.stop_token_ids.size()));
  }
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    if (p.stop_token_ids[i] < 0) {
      return InvalidArgumentError("stop_token_ids[" + std::to_string(i) + "] must be >= 0, got " +
                                  std::to_string(p.stop_token_ids[i]));
    }
  }

  if (p.logprobs.has_value()) MQ_RETURN_IF_ERROR(CheckIntClosed("logprobs", *p.logprobs, 0, L::kMaxLogprobs));
  MQ_RETURN_IF_ERROR(CheckIntClosed("n", p.n, 1, L::kMaxCompletions));
  return OkStatus();
}

Status ValidateForModel(const GenerationParams& p, int64_t vocab_size) {
  if (vocab_size <= 0) return InvalidArgumentError("vocab_size must be positive, got " + std::to_string(vocab_size));
  for (size_t i = 0; i < p.stop_token_ids.size(); ++i) {
    const int32_t id = p.stop_token_ids[i];
    if (id < 0 || id >= vocab_size) {
      return InvalidArgumentError("stop_token_ids[" + std::to_string(i) + "] must be in [0, " +
                                  std::to_string(vocab_size) + "), the model's vocabulary, got " + std::to_string(id));
    }
  }
  return OkStatus();
}

}  // namespace mq::serve
