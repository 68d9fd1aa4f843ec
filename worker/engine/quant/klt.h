// KLT-enhanced rotation: for activations with second-moment matrix Σ = K Λ Kᵀ, R = K·H̃ gives
// cov(x R) = H̃ᵀ Λ H̃, whose diagonal is tr(Σ)/n for every channel (equal variances).
#pragma once

#include <cstdint>
#include <vector>

#include "quant/hadamard.h"
#include "quant/quant_accelerator.h"
#include "util/status.h"

namespace mq::quant {

// Eigenvectors of the symmetric n×n matrix `sigma` (row-major, float64) as the columns of K,
// ordered by descending eigenvalue. Uses Eigen's SelfAdjointEigenSolver.
StatusOr<std::vector<double>> KltBasis(const std::vector<double>& sigma, int64_t n,
                                       std::vector<double>* eigenvalues = nullptr);

// R = K · H̃ (n×n, row-major, orthogonal), the eigendecomposition run on `accel`.
StatusOr<std::vector<double>> KltHadamardRotation(const std::vector<double>& sigma, int64_t n,
                                                  const RandomHadamard& hadamard, QuantAccelerator& accel);

}  // namespace mq::quant
