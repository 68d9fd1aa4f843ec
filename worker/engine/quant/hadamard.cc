#include "quant/hadamard.h"

#include <algorithm>
#include <bit>
#include <cassert>
#include <cmath>
#include <random>
#include <string>

namespace mq::quant {
namespace {

// Largest power of two SmallHadamard builds densely; larger Sylvester factors only ever exist
// implicitly inside the fast transform.
constexpr int kMaxSmallPow2 = 1 << 12;
// Largest small factor a RandomHadamard can hold; sizes the stack scratch of the mix.
constexpr int kMaxFactorM = 28;
// Columns per pass of the m x m mix: wide enough to vectorize, small enough that the scratch
// (m * kMixBlock values) stays in L1 next to the row.
constexpr int64_t kMixBlock = 64;

bool IsPow2(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

// Quadratic character of a prime field: chi[a] = 0, +1 or -1 as a is zero, a nonzero square or
// a non-square mod q.
std::vector<int> QuadraticCharacter(int q) {
  std::vector<int> chi(q, -1);
  chi[0] = 0;
  for (int x = 1; x < q; ++x) chi[(x * x) % q] = 1;
  return chi;
}

std::vector<int8_t> Sylvester(int p) {
  std::vector<int8_t> h(static_cast<size_t>(p) * p);
  for (int i = 0; i < p; ++i)
    for (int j = 0; j < p; ++j)
      h[static_cast<size_t>(i) * p + j] = (std::popcount(static_cast<unsigned>(i & j)) & 1) ? -1 : 1;
  return h;
}

// Paley I, q prime with q = 3 mod 4, order q + 1: H = I + S with S = [[0, 1^T], [-1, Q]],
// Q[i][j] = chi(j - i). Q is skew for q = 3 mod 4, so S is a skew conference matrix
// (S S^T = q I, S + S^T = 0) and H H^T = I + q I.
std::vector<int8_t> PaleyI(int q) {
  const std::vector<int> chi = QuadraticCharacter(q);
  const int m = q + 1;
  std::vector<int8_t> h(static_cast<size_t>(m) * m);
  for (int i = 0; i < m; ++i) {
    for (int j = 0; j < m; ++j) {
      int s;
      if (i == 0 && j == 0) s = 0;
      else if (i == 0) s = 1;
      else if (j == 0) s = -1;
      else s = chi[((j - i) % q + q) % q];
      h[static_cast<size_t>(i) * m + j] = static_cast<int8_t>(s + (i == j ? 1 : 0));
    }
  }
  return h;
}

// Paley II, q prime with q = 1 mod 4, order 2(q + 1): S = [[0, 1^T], [1, Q]] is a symmetric
// conference matrix; each 0 becomes [[1, -1], [-1, -1]] and each +-1 becomes +-[[1, 1], [1, -1]].
std::vector<int8_t> PaleyII(int q) {
  const std::vector<int> chi = QuadraticCharacter(q);
  const int c = q + 1;
  const int m = 2 * c;
  std::vector<int8_t> h(static_cast<size_t>(m) * m);
  for (int i = 0; i < c; ++i) {
    for (int j = 0; j < c; ++j) {
      int s;
      if (i == 0 && j == 0) s = 0;
      else if (i == 0 || j == 0) s = 1;
      else s = chi[((j - i) % q + q) % q];
      const int block[2][2] = {{s == 0 ? 1 : s, s == 0 ? -1 : s},
                               {s == 0 ? -1 : s, s == 0 ? -1 : -s}};
      for (int u = 0; u < 2; ++u)
        for (int v = 0; v < 2; ++v)
          h[static_cast<size_t>(2 * i + u) * m + (2 * j + v)] = static_cast<int8_t>(block[u][v]);
    }
  }
  return h;
}

// a (x) b: (a (x) b)[(i, k), (j, l)] = a[i][j] * b[k][l].
std::vector<int8_t> Kronecker(const std::vector<int8_t>& a, int ma, const std::vector<int8_t>& b, int mb) {
  const int m = ma * mb;
  std::vector<int8_t> h(static_cast<size_t>(m) * m);
  for (int i = 0; i < ma; ++i)
    for (int k = 0; k < mb; ++k)
      for (int j = 0; j < ma; ++j)
        for (int l = 0; l < mb; ++l)
          h[static_cast<size_t>(i * mb + k) * m + (j * mb + l)] =
              static_cast<int8_t>(a[static_cast<size_t>(i) * ma + j] * b[static_cast<size_t>(k) * mb + l]);
  return h;
}

// Exact integer check of H H^T == m I and entries +-1, so a wrong construction can never reach a
// model (a non-orthogonal "rotation" would silently change the network's function).
bool IsHadamard(const std::vector<int8_t>& h, int m) {
  for (int8_t v : h)
    if (v != 1 && v != -1) return false;
  for (int i = 0; i < m; ++i) {
    for (int j = i; j < m; ++j) {
      int dot = 0;
      for (int k = 0; k < m; ++k) dot += h[static_cast<size_t>(i) * m + k] * h[static_cast<size_t>(j) * m + k];
      if (dot != (i == j ? m : 0)) return false;
    }
  }
  return true;
}

// The kernels below give every inner loop a compile-time trip count and __restrict operands: that
// is what GCC vectorizes even at -O2, whose cost model refuses runtime trip counts and alias-check
// versioning. Vectorization never reorders an operation here, so results do not depend on it.
constexpr int64_t kLanes = 8;       // butterfly span: one AVX2 float vector, two double vectors
constexpr int64_t kMixLanes = 32;   // mix accumulators: four independent FMA chains in float

// Levels h = 1, 2, 4 of the transform on 8 contiguous values, in registers.
template <typename T>
inline void Radix8(T* v) {
  const T a0 = v[0] + v[1], a1 = v[0] - v[1], a2 = v[2] + v[3], a3 = v[2] - v[3];
  const T a4 = v[4] + v[5], a5 = v[4] - v[5], a6 = v[6] + v[7], a7 = v[6] - v[7];
  const T b0 = a0 + a2, b1 = a1 + a3, b2 = a0 - a2, b3 = a1 - a3;
  const T b4 = a4 + a6, b5 = a5 + a7, b6 = a4 - a6, b7 = a5 - a7;
  v[0] = b0 + b4; v[1] = b1 + b5; v[2] = b2 + b6; v[3] = b3 + b7;
  v[4] = b0 - b4; v[5] = b1 - b5; v[6] = b2 - b6; v[7] = b3 - b7;
}

// Two butterfly levels (h and 2h) on four disjoint spans of kLanes values, q_k = x + j + k*h.
// The spans never overlap (h >= kLanes), which __restrict tells the compiler so that it needs no
// runtime alias check; -O2 would not vectorize a loop that needed one.
template <typename T>
inline void Butterfly4(T* __restrict q0, T* __restrict q1, T* __restrict q2, T* __restrict q3) {
  for (int k = 0; k < kLanes; ++k) {
    const T a = q0[k], b = q1[k], c = q2[k], d = q3[k];
    const T s0 = a + b, d0 = a - b, s1 = c + d, d1 = c - d;
    q0[k] = s0 + s1;
    q1[k] = d0 + d1;
    q2[k] = s0 - s1;
    q3[k] = d0 - d1;
  }
}

template <typename T>
inline void Butterfly2(T* __restrict q0, T* __restrict q1) {
  for (int k = 0; k < kLanes; ++k) {
    const T a = q0[k], b = q1[k];
    q0[k] = a + b;
    q1[k] = a - b;
  }
}

// In-place Walsh-Hadamard transform of p (a power of two) contiguous values: x <- x * H_p,
// unnormalized. Levels below 8 run in registers per group of 8; the rest two levels per sweep
// (radix 4), which halves the loads and stores of plain radix-2 butterflies.
template <typename T>
void Fwht(T* x, int64_t p) {
  if (p < kLanes) {
    for (int64_t h = 1; h < p; h <<= 1) {
      for (int64_t i = 0; i < p; i += 2 * h) {
        for (int64_t j = i; j < i + h; ++j) {
          const T a = x[j], b = x[j + h];
          x[j] = a + b;
          x[j + h] = a - b;
        }
      }
    }
    return;
  }
  for (int64_t i = 0; i < p; i += kLanes) Radix8(x + i);
  int64_t h = kLanes;
  for (; 4 * h <= p; h *= 4) {
    for (int64_t i = 0; i < p; i += 4 * h) {
      for (int64_t j = i; j < i + h; j += kLanes) Butterfly4(x + j, x + j + h, x + j + 2 * h, x + j + 3 * h);
    }
  }
  if (h < p) {  // an odd number of levels above 8: one radix-2 sweep left
    for (int64_t i = 0; i < p; i += 2 * h) {
      for (int64_t j = i; j < i + h; j += kLanes) Butterfly2(x + j, x + j + h);
    }
  }
}

// out[0, w) = sum_i coef[i] * src[i * kMixBlock + (0, w)], i ascending. The coefficients are +-1,
// so each multiply-add is exact up to the one rounding of the add: fixed order, deterministic.
template <typename T, int64_t W>
inline void MixColumns(T* __restrict out, const T* __restrict src, const int8_t* __restrict coef, int m) {
  T acc[W];
  const T c0 = coef[0];
  for (int64_t k = 0; k < W; ++k) acc[k] = c0 * src[k];
  for (int i = 1; i < m; ++i) {
    const T ci = coef[i];
    const T* s = src + i * kMixBlock;
    for (int64_t k = 0; k < W; ++k) acc[k] += ci * s[k];
  }
  for (int64_t k = 0; k < W; ++k) out[k] = acc[k];
}

template <typename T>
inline void CopyBlock(const T* __restrict from, T* __restrict to) {
  for (int64_t k = 0; k < kMixBlock; ++k) to[k] = from[k];
}

// Mixes the m chunks of length p: chunk[o] <- sum_i coef[o * m + i] * chunk[i], coef +-1. Done in
// column blocks through a stack scratch so the row is updated in place without allocating.
template <typename T>
void MixChunks(T* x, int m, int64_t p, const int8_t* coef) {
  assert(m <= kMaxFactorM);
  T scratch[kMaxFactorM * kMixBlock];
  for (int64_t b0 = 0; b0 < p; b0 += kMixBlock) {
    const int64_t w = std::min(kMixBlock, p - b0);
    for (int i = 0; i < m; ++i) {
      // A fixed-length copy for the common full block: std::copy_n of 256 bytes became `rep movs`,
      // whose startup cost dominated the mix.
      if (w == kMixBlock) {
        CopyBlock(x + i * p + b0, scratch + i * kMixBlock);
      } else {
        std::copy_n(x + i * p + b0, w, scratch + i * kMixBlock);
      }
    }
    for (int o = 0; o < m; ++o) {
      T* out = x + o * p + b0;
      const int8_t* c = coef + o * m;
      if (w % kMixLanes == 0) {
        for (int64_t j = 0; j < w; j += kMixLanes) MixColumns<T, kMixLanes>(out + j, scratch + j, c, m);
      } else {  // p < kMixLanes: a small matrix, one column at a time
        for (int64_t j = 0; j < w; ++j) MixColumns<T, 1>(out + j, scratch + j, c, m);
      }
    }
  }
}

}  // namespace

struct RandomHadamard::Rep {
  std::vector<int8_t> signs;         // D, length n
  std::vector<int8_t> small;         // H_m, row-major m*m
  std::vector<int8_t> mix_forward;   // [o][i] = H_m[i][o]: x * H_m mixes with H_m^T
  std::vector<int8_t> mix_transpose; // [o][i] = H_m[o][i]: x * H_m^T
  // D / sqrt(n) in each precision, so the online sign pass is one multiply per element with no
  // int8 conversion. sign * (1 / sqrt(n)) is exact, so these equal signs[i] * inv_sqrt_n.
  std::vector<float> scale_f;
  std::vector<double> scale_d;
  double inv_sqrt_n = 1.0;
};

StatusOr<HadamardSize> FactorHadamardSize(int64_t n) {
  const std::string supported =
      "supported sizes are 2^k, 12*2^k, 20*2^k and 28*2^k (k >= 0) up to " + std::to_string(kMaxHadamardSize);
  if (n < 1 || n > kMaxHadamardSize) {
    return InvalidArgumentError("unsupported Hadamard size " + std::to_string(n) + ": " + supported);
  }
  const int64_t pow2 = n & -n;  // largest power of two dividing n
  const int64_t odd = n / pow2;
  if (odd == 1) return HadamardSize{1, static_cast<int>(n)};
  // The small factors are 4 * odd with odd in {3, 5, 7}; they need two of the powers of two.
  if ((odd == 3 || odd == 5 || odd == 7) && pow2 >= 4) {
    return HadamardSize{static_cast<int>(4 * odd), static_cast<int>(pow2 / 4)};
  }
  return InvalidArgumentError("unsupported Hadamard size " + std::to_string(n) + ": " + supported);
}

StatusOr<std::vector<int8_t>> SmallHadamard(int m) {
  std::vector<int8_t> h;
  if (IsPow2(m) && m <= kMaxSmallPow2) {
    // Hadamard by induction (H_2p = H_2 (x) H_p); an O(m^3) check would take seconds at m = 4096.
    return Sylvester(m);
  } else if (m == 12) {
    h = PaleyI(11);
  } else if (m == 20) {
    h = PaleyI(19);
  } else if (m == 28) {
    h = PaleyII(13);
  } else if (m == 40) {
    // Paley II needs q = 1 mod 4 and 19 is not, so 40 is H_20 (x) H_2; with the small factor
    // outside that keeps H_40 (x) H_p == H_20 (x) H_{2p}.
    h = Kronecker(PaleyI(19), 20, Sylvester(2), 2);
  } else {
    return InvalidArgumentError("no small Hadamard matrix of order " + std::to_string(m) +
                                ": supported orders are 12, 20, 28, 40 and powers of two up to " +
                                std::to_string(kMaxSmallPow2));
  }
  if (!IsHadamard(h, m)) {
    return InternalError("constructed matrix of order " + std::to_string(m) + " is not Hadamard");
  }
  return h;
}

StatusOr<RandomHadamard> RandomHadamard::Create(int64_t n, uint64_t seed) { return Build(n, &seed); }

StatusOr<RandomHadamard> RandomHadamard::CreatePlain(int64_t n) { return Build(n, nullptr); }

StatusOr<RandomHadamard> RandomHadamard::Build(int64_t n, const uint64_t* seed) {
  MQ_ASSIGN_OR_RETURN(const HadamardSize size, FactorHadamardSize(n));
  auto rep = std::make_shared<Rep>();
  MQ_ASSIGN_OR_RETURN(rep->small, SmallHadamard(size.m));
  const int m = size.m;
  rep->mix_forward.resize(static_cast<size_t>(m) * m);
  rep->mix_transpose.resize(static_cast<size_t>(m) * m);
  for (int o = 0; o < m; ++o) {
    for (int i = 0; i < m; ++i) {
      rep->mix_forward[o * m + i] = rep->small[i * m + o];
      rep->mix_transpose[o * m + i] = rep->small[o * m + i];
    }
  }
  rep->signs.assign(n, 1);
  if (seed != nullptr) {
    std::mt19937_64 gen(*seed);
    uint64_t word = 0;
    for (int64_t i = 0; i < n; ++i) {
      if (i % 64 == 0) word = gen();
      if ((word >> (i % 64)) & 1) rep->signs[i] = -1;
    }
  }
  rep->inv_sqrt_n = 1.0 / std::sqrt(static_cast<double>(n));
  const float inv_f = static_cast<float>(rep->inv_sqrt_n);
  rep->scale_f.resize(n);
  rep->scale_d.resize(n);
  for (int64_t i = 0; i < n; ++i) {
    rep->scale_f[i] = rep->signs[i] * inv_f;
    rep->scale_d[i] = rep->signs[i] * rep->inv_sqrt_n;
  }
  return RandomHadamard(size, std::move(rep));
}

const std::vector<int8_t>& RandomHadamard::signs() const { return rep_->signs; }

std::vector<double> RandomHadamard::Dense() const {
  const int64_t n = size();
  const int m = size_.m;
  const int64_t p = size_.pow2;
  std::vector<double> out(static_cast<size_t>(n) * n);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t a = i / p, b = i % p;
    const double row_scale = rep_->signs[i] * rep_->inv_sqrt_n;
    double* row = out.data() + i * n;
    for (int a2 = 0; a2 < m; ++a2) {
      const double v = row_scale * rep_->small[a * m + a2];
      for (int64_t b2 = 0; b2 < p; ++b2) {
        row[a2 * p + b2] = (std::popcount(static_cast<uint64_t>(b & b2)) & 1) ? -v : v;
      }
    }
  }
  return out;
}

namespace {

// row[i] *= scale[i], in blocks of kLanes plus a tail (n % 8 != 0 only for n < 32).
template <typename T>
void ScaleRow(T* __restrict row, const T* __restrict scale, int64_t n) {
  const int64_t body = n - n % kLanes;
  for (int64_t i = 0; i < body; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) row[i + k] *= scale[i + k];
  }
  for (int64_t i = body; i < n; ++i) row[i] *= scale[i];
}

// Rows of x * (D H_n / sqrt(n)) or x * (D H_n / sqrt(n))^T = x * H_n^T D / sqrt(n). The sign and
// the normalization are one pass (scale = D / sqrt(n)), before the transform for the forward
// product and after it for the transpose. H_p is symmetric, so only the m-mix differs.
template <typename T>
void TransformRows(T* x, int64_t rows, int64_t row_stride, const HadamardSize& size, const T* scale,
                   const int8_t* mix, bool transpose) {
  assert(row_stride >= size.n());
  const int64_t n = size.n();
  const int64_t p = size.pow2;
  const int m = size.m;
  for (int64_t r = 0; r < rows; ++r) {
    T* row = x + r * row_stride;
    if (!transpose) ScaleRow(row, scale, n);
    if (p > 1) {
      for (int a = 0; a < m; ++a) Fwht(row + a * p, p);
    }
    if (m > 1) MixChunks(row, m, p, mix);
    if (transpose) ScaleRow(row, scale, n);
  }
}

}  // namespace

void RandomHadamard::ApplyRows(float* x, int64_t rows, int64_t row_stride) const {
  TransformRows(x, rows, row_stride, size_, rep_->scale_f.data(), rep_->mix_forward.data(), false);
}

void RandomHadamard::ApplyRows(double* x, int64_t rows, int64_t row_stride) const {
  TransformRows(x, rows, row_stride, size_, rep_->scale_d.data(), rep_->mix_forward.data(), false);
}

void RandomHadamard::ApplyTransposeRows(float* x, int64_t rows, int64_t row_stride) const {
  TransformRows(x, rows, row_stride, size_, rep_->scale_f.data(), rep_->mix_transpose.data(), true);
}

void RandomHadamard::ApplyTransposeRows(double* x, int64_t rows, int64_t row_stride) const {
  TransformRows(x, rows, row_stride, size_, rep_->scale_d.data(), rep_->mix_transpose.data(), true);
}

}  // namespace mq::quant
