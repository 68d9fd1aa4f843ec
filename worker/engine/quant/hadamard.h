// Randomized Hadamard rotations for MambaQuant.
//
// MambaQuant rotates activations and folds the inverse rotation into the neighbouring weights so
// that a single outlier channel is spread evenly over all channels before quantization. The
// rotation is H~ = D * H_n / sqrt(n): D is a seeded diagonal of random +-1 signs and H_n a +-1
// Hadamard matrix. H~ is orthogonal, so x * H~ * H~^T * W == x * W exactly in real arithmetic.
//
// Conventions (every backend must match these bit for bit in structure):
//  * Activations are row vectors. "Rotating x by H~" means x <- x * H~.
//  * Mamba widths are not all powers of two (768 = 12*64, 5120 = 20*256, dt_rank 24, 160...), so
//    H_n = H_m (x) H_p, the Kronecker product with the SMALL factor OUTSIDE: m in {1, 12, 20, 28}
//    and H_p the Sylvester matrix of order p = 2^k, H_p[i][j] = (-1)^popcount(i & j). With
//    i = a*p + b and j = a'*p + b':   H_n[i][j] = H_m[a][a'] * H_p[b][b'].
//    Viewing a row x of length n as an m x p matrix X (row-major), x * H_n = H_m^T * X * H_p: a
//    Walsh-Hadamard butterfly over each contiguous chunk of p values, then an m x m +-1 mix across
//    the chunks. The small factor outside keeps the butterflies on contiguous memory.
//  * H_12 and H_20 are Paley I (q = 11, 19), H_28 is Paley II (q = 13); H_40 = H_20 (x) H_2, so
//    H_40 (x) H_p == H_20 (x) H_{2p} and the factorization never needs m = 40.
//  * Signs come from std::mt19937_64(seed) raw 64-bit outputs, never a std distribution (those are
//    implementation-defined): sign[i] = -1 if bit (i % 64) of output number i / 64 is set, else +1.
//    So the signs of size n are a prefix of the signs of any larger size with the same seed.
#pragma once

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "util/status.h"

namespace mq::quant {

// n = m * pow2, m the order of the small (Paley or trivial) factor, pow2 a power of two.
struct HadamardSize {
  int m = 1;
  int pow2 = 1;
  int64_t n() const { return static_cast<int64_t>(m) * pow2; }
};

// Largest n accepted; the fast transform itself has no limit, but beyond this nothing in a Mamba
// model needs a rotation and n * n index arithmetic in Dense() would stop being sane.
inline constexpr int64_t kMaxHadamardSize = int64_t{1} << 24;

// Splits n into the form above, choosing the smallest m. InvalidArgument (naming the supported
// forms 2^k, 12*2^k, 20*2^k, 28*2^k) for anything else, n < 1 or n > kMaxHadamardSize.
StatusOr<HadamardSize> FactorHadamardSize(int64_t n);

// Dense +-1 Hadamard matrix of order m, row-major m*m: m in {12, 20, 28, 40} (constructions
// above) or a power of two up to 4096 (Sylvester). Every returned matrix satisfies
// H * H^T == m * I exactly: the Paley-based ones are checked on construction (O(m^3) integer
// work, trivial at m <= 40), Sylvester holds by induction. InvalidArgument for other m.
StatusOr<std::vector<int8_t>> SmallHadamard(int m);

// H~ = D * H_n / sqrt(n). Immutable; copies share the sign table, so it is cheap to copy and
// safe to use from many threads at once (the Apply* methods use only stack scratch).
class RandomHadamard {
 public:
  // Seeded random signs. InvalidArgument if n is unsupported (see FactorHadamardSize).
  static StatusOr<RandomHadamard> Create(int64_t n, uint64_t seed);
  // All signs +1: H~ = H_n / sqrt(n). For tests and for rotations that need no randomization
  // (the d_state x d_state rotation of the SSM state).
  static StatusOr<RandomHadamard> CreatePlain(int64_t n);

  int64_t size() const { return size_.n(); }
  HadamardSize factors() const { return size_; }
  // The diagonal D, +-1, length n.
  const std::vector<int8_t>& signs() const;

  // H~ in double, n*n row-major, for offline fusion into weights: O(n^2) memory (200 MiB at
  // n = 5120), never use it online.
  std::vector<double> Dense() const;

  // x[r, :] <- x[r, :] * H~ in place for r in [0, rows), with the fast transform:
  // O(n log n + n m) per row, no heap allocation. Rows start row_stride elements apart
  // (row_stride >= n) so a column slice of a wider buffer can be rotated in place.
  void ApplyRows(float* x, int64_t rows) const { ApplyRows(x, rows, size()); }
  void ApplyRows(float* x, int64_t rows, int64_t row_stride) const;
  void ApplyRows(double* x, int64_t rows) const { ApplyRows(x, rows, size()); }
  void ApplyRows(double* x, int64_t rows, int64_t row_stride) const;

  // x[r, :] <- x[r, :] * H~^T, the inverse rotation.
  void ApplyTransposeRows(float* x, int64_t rows) const { ApplyTransposeRows(x, rows, size()); }
  void ApplyTransposeRows(float* x, int64_t rows, int64_t row_stride) const;
  void ApplyTransposeRows(double* x, int64_t rows) const { ApplyTransposeRows(x, rows, size()); }
  void ApplyTransposeRows(double* x, int64_t rows, int64_t row_stride) const;

 private:
  struct Rep;
  RandomHadamard(HadamardSize size, std::shared_ptr<const Rep> rep)
      : size_(size), rep_(std::move(rep)) {}
  static StatusOr<RandomHadamard> Build(int64_t n, const uint64_t* seed);

  HadamardSize size_;
  std::shared_ptr<const Rep> rep_;
};

}  // namespace mq::quant
