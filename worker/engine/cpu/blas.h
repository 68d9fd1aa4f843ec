// The float32 matrix products of the CPU backend, on a real BLAS (OpenBLAS).
#pragma once

#include <cstdint>

namespace mq::cpu {

// y[rows, out] = x[rows, in] · w[out, in]ᵀ  (+ y when accumulate). Row-major, dense.
void MatMulTransposedB(const float* x, const float* w, float* y, int64_t rows, int64_t in, int64_t out,
                       bool accumulate = false);

// c[m, n] = a[m, k] · b[k, n] in double (offline fusion of rotations into weights).
void MatMulF64(const double* a, const double* b, double* c, int64_t m, int64_t k, int64_t n);

// Limits the BLAS thread pool (the worker runs one job per core budget).
void SetBlasThreads(int threads);

}  // namespace mq::cpu
