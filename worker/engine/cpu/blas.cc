#include "cpu/blas.h"

#include <cblas.h>

extern "C" void openblas_set_num_threads(int);

namespace mq::cpu {

void MatMulTransposedB(const float* x, const float* w, float* y, int64_t rows, int64_t in, int64_t out,
                       bool accumulate) {
  if (rows == 0 || out == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), static_cast<int>(out),
              static_cast<int>(in), 1.0f, x, static_cast<int>(in), w, static_cast<int>(in),
              accumulate ? 1.0f : 0.0f, y, static_cast<int>(out));
}

void MatMulF64(const double* a, const double* b, double* c, int64_t m, int64_t k, int64_t n) {
  if (m == 0 || n == 0) return;
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(m), static_cast<int>(n),
              static_cast<int>(k), 1.0, a, static_cast<int>(k), b, static_cast<int>(n), 0.0, c,
              static_cast<int>(n));
}

void SetBlasThreads(int threads) { openblas_set_num_threads(threads); }

}  // namespace mq::cpu
