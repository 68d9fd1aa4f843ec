#include "quant/online_rotation.h"

#include <string>

// Part of the light readers (mq_vim_format) that load a quantized export's online Hadamards
// without the engine's numerical backends.

namespace mq::quant {

std::string HadamardRowTransform::Describe() const {
  return "hadamard(" + std::to_string(size()) + ", seed " + std::to_string(seed_) + ")";
}

}  // namespace mq::quant
