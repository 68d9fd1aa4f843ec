// DenseRowTransform's product (declared in online_rotation.h): with BLAS, so in mq_engine only.
#include <algorithm>
#include <vector>

#include <cblas.h>

#include "quant/online_rotation.h"

namespace mq::quant {

void DenseRowTransform::ApplyRows(float* x, int64_t rows) const {
  std::vector<float> out(static_cast<size_t>(rows * n_));
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows), static_cast<int>(n_),
              static_cast<int>(n_), 1.0f, x, static_cast<int>(n_), m_.data(), static_cast<int>(n_), 0.0f, out.data(),
              static_cast<int>(n_));
  std::copy(out.begin(), out.end(), x);
}

}  // namespace mq::quant
