#include "format/mamba_tensors.h"

namespace mq::format {

std::vector<ExpectedTensor> ExpectedMambaTensors(const MambaConfig& c, bool quantized) {
  // MambaConfig::Validate bounds every size, so these products fit in int64.
  const int64_t d = c.hidden_size, E = c.intermediate_size, N = c.state_size;
  const int64_t R = c.time_step_rank, K = c.conv_kernel, V = c.vocab_size;
  using Shape = std::vector<int64_t>;
  auto linear = [&](Shape s) -> std::optional<Shape> {
    if (quantized) return std::nullopt;
    return s;
  };
  std::vector<ExpectedTensor> out;
  out.push_back({"backbone.embeddings.weight", Shape{V, d}});
  out.push_back({"backbone.norm_f.weight", Shape{d}});
  if (!c.tie_word_embeddings) out.push_back({"lm_head.weight", linear({V, d})});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = "backbone.layers." + std::to_string(i);
    const std::string m = p + ".mixer";
    out.push_back({p + ".norm.weight", Shape{d}});
    out.push_back({m + ".in_proj.weight", linear({2 * E, d})});
    if (c.use_bias) out.push_back({m + ".in_proj.bias", Shape{2 * E}});
    out.push_back({m + ".conv1d.weight", Shape{E, 1, K}});
    if (c.use_conv_bias || quantized) out.push_back({m + ".conv1d.bias", Shape{E}});
    out.push_back({m + ".x_proj.weight", linear({R + 2 * N, E})});
    out.push_back({m + ".dt_proj.weight", linear({E, R})});
    out.push_back({m + ".dt_proj.bias", Shape{E}});
    out.push_back({m + ".A_log", Shape{E, N}});
    out.push_back({m + ".D", Shape{E}});
    out.push_back({m + ".out_proj.weight", linear({d, E})});
    if (c.use_bias) out.push_back({m + ".out_proj.bias", Shape{d}});
  }
  return out;
}

}  // namespace mq::format
