#include "quant/online_rotation.h"

#include <string>

// DenseRowTransform::ApplyRows is in dense_row_transform.cc: it multiplies with BLAS, and this
// file is part of the light readers (mq_vim_format) that load a quantized export's online
// Hadamards without the engine's numerical backends.

namespace mq::quant {

std::string HadamardRowTransform::Describe() const {
  return "hadamard(" + std::to_string(size()) + ", seed " + std::to_string(seed_) + ")";
}

std::string DenseRowTransform::Describe() const { return "dense(" + std::to_string(n_) + ")"; }

}  // namespace mq::quant
