#include "model/model_shapes.h"

namespace mq {
namespace {

struct Shape {
  const char* name;
  int64_t d, layers;
};
constexpr Shape kShapes[] = {{"130m", 768, 24},  {"370m", 1024, 48}, {"790m", 1536, 48},
                             {"1.4b", 2048, 48}, {"2.8b", 2560, 64}, {"tiny", 64, 2}};

}  // namespace

MambaConfig MambaFamilyConfig(int64_t d, int64_t layers) {
  MambaConfig c;
  c.vocab_size = 50280;
  c.hidden_size = d;
  c.intermediate_size = 2 * d;
  c.state_size = 16;
  c.num_hidden_layers = layers;
  c.conv_kernel = 4;
  c.time_step_rank = (d + 15) / 16;
  c.expand = 2;
  c.layer_norm_epsilon = 1e-5;
  c.residual_in_fp32 = true;
  c.tie_word_embeddings = true;
  c.use_bias = false;
  c.use_conv_bias = true;
  c.bos_token_id = 0;
  c.eos_token_id = 0;
  c.pad_token_id = 0;
  return c;
}

const std::vector<std::string>& ModelShapeNames() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (const Shape& s : kShapes) v.push_back(s.name);
    return v;
  }();
  return names;
}

StatusOr<MambaConfig> ModelShapeConfig(const std::string& name) {
  for (const Shape& s : kShapes)
    if (name == s.name) return MambaFamilyConfig(s.d, s.layers);
  std::string known;
  for (const Shape& s : kShapes) known += std::string(known.empty() ? "" : ", ") + s.name;
  return InvalidArgumentError("unknown model shape \"" + name + "\" (known: " + known + ")");
}

}  // namespace mq
