#include "quant/online_rotation.h"

#include <string>

#include <cblas.h>

namespace mq::quant {

std::string HadamardRowTransform::Describe() const {
  return "hadamard(" + std::to_string(size()) + ", seed " + std::to_string(seed_) + ")";
}

void DenseRowTransform::ApplyRows(float* x, int64_t rows) const {
  std::vector<float> out(static_cast<size_t>(rows * n_));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n_),
              static_cast<int>(n_), 1.0f, x, static_cast<int>(n_), m_.data(), static_cast<int>(n_), 0.0f, out.data(),
              static_cast<int>(n_));
  std::copy(out.begin(), out.end(), x);
}

std::string DenseRowTransform::Describe() const { return "dense(" + std::to_string(n_) + ")"; }

}  // namespace mq::quant
