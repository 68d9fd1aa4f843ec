#include "eval/generation.h"

#include <algorithm>

#include "cpu/mamba_forward.h"

namespace mq {

StatusOr<std::vector<std::vector<int32_t>>> Generate(const MambaWeights& w, const std::vector<std::vector<int32_t>>& prompts,
                                                     const GenerationOptions& options) {
  MQ_RETURN_IF_ERROR(ValidateSampling(options.sampling));
  if (prompts.empty()) return std::vector<std::vector<int32_t>>{};
  const int64_t B = static_cast<int64_t>(prompts.size());
  const int64_t V = w.V();
  const size_t prompt_len = prompts[0].size();
  if (prompt_len == 0) return InvalidArgumentError("empty prompt");
  for (const auto& p : prompts)
    if (p.size() != prompt_len) return InvalidArgumentError("batched prompts must have equal length");

  std::vector<int32_t> ids;
  for (const auto& p : prompts) ids.insert(ids.end(), p.begin(), p.end());
  cpu::MambaState state = cpu::MambaState::Zeros(w.config, B);
  std::vector<float> logits;
  cpu::ForwardOptions fo;
  fo.last_logits_only = true;
  MQ_RETURN_IF_ERROR(cpu::MambaForward(w, ids.data(), B, static_cast<int64_t>(prompt_len), &state, &logits, fo));

  std::vector<std::vector<int32_t>> out = prompts;
  std::vector<bool> done(static_cast<size_t>(B), false);
  std::vector<int32_t> next(static_cast<size_t>(B));
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    for (int64_t b = 0; b < B; ++b) {
      const float* row = logits.data() + b * V;
      const int32_t arg = SampleToken(row, V, options.sampling, static_cast<uint64_t>(b), static_cast<uint64_t>(step));
      next[b] = done[b] ? options.pad_id : arg;
      out[b].push_back(next[b]);
      if (arg == options.eos_id) done[b] = true;
    }
    if (std::all_of(done.begin(), done.end(), [](bool x) { return x; })) break;
    if (step + 1 == options.max_new_tokens) break;
    MQ_RETURN_IF_ERROR(cpu::MambaForward(w, next.data(), B, 1, &state, &logits, fo));
  }
  return out;
}

}  // namespace mq
