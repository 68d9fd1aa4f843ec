#include "quant/hadamard.h"

#include <gtest/gtest.h>

#include <Eigen/Dense>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace mq::quant {
namespace {

using RowMatrix = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

// Every width a real Mamba model or a test fixture rotates: d_state, dt_rank, d_model, d_inner.
const std::vector<int64_t> kModelSizes = {4,   16,  24,   48,   64,   96,   128,  160,  256,  384,
                                          512, 768, 1024, 1536, 2048, 2560, 3072, 4096, 5120};
// Edge cases of the kernels no model size reaches: n = 1 and 2 (no or tiny butterflies), p < 8
// (scalar butterflies), p = 8, 16, 32 (radix-8 only, + one radix-2, + one radix-4 sweep), p = 1
// with each small factor, the column-at-a-time mix (p < 32), and m = 28 (Paley II, symmetric).
const std::vector<int64_t> kEdgeSizes = {1, 2, 8, 12, 20, 28, 32, 56, 448, 1792};

// Test data from raw engine bits so the inputs are the same on every platform.
double Uniform(std::mt19937_64& gen) { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }
double Gaussian(std::mt19937_64& gen) {
  const double u1 = 1.0 - Uniform(gen), u2 = Uniform(gen);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}
std::vector<double> GaussianRows(int64_t rows, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::vector<double> x(rows * n);
  for (double& v : x) v = Gaussian(gen);
  return x;
}

double Norm(const double* x, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * x[i];
  return std::sqrt(s);
}

template <typename T>
double MaxOverRms(const T* x, int64_t n) {
  double mx = 0, ss = 0;
  for (int64_t i = 0; i < n; ++i) {
    mx = std::max(mx, std::abs(static_cast<double>(x[i])));
    ss += static_cast<double>(x[i]) * x[i];
  }
  return mx / std::sqrt(ss / n);
}

// ---------------------------------------------------------------------------------------------
// Small factors.

TEST(SmallHadamardTest, EntriesArePlusMinusOneAndGramIsExactlyMI) {
  for (int m : {1, 2, 4, 8, 12, 16, 20, 28, 40, 64}) {
    SCOPED_TRACE("m=" + std::to_string(m));
    auto h = SmallHadamard(m);
    ASSERT_TRUE(h.ok()) << h.status().ToString();
    ASSERT_EQ(h->size(), static_cast<size_t>(m * m));
    for (int8_t v : *h) ASSERT_TRUE(v == 1 || v == -1);
    for (int i = 0; i < m; ++i) {
      for (int j = 0; j < m; ++j) {
        int dot = 0;
        for (int k = 0; k < m; ++k) dot += (*h)[i * m + k] * (*h)[j * m + k];
        ASSERT_EQ(dot, i == j ? m : 0) << "row " << i << " col " << j;
      }
    }
  }
}

TEST(SmallHadamardTest, PaleyStructure) {
  // Paley I (12, 20) is I + skew: off-diagonal entries are antisymmetric. Paley II (28) is symmetric.
  for (int m : {12, 20}) {
    auto h = SmallHadamard(m);
    ASSERT_TRUE(h.ok());
    for (int i = 0; i < m; ++i) {
      EXPECT_EQ((*h)[i * m + i], 1);
      for (int j = 0; j < m; ++j) {
        if (i != j) {
          EXPECT_EQ((*h)[i * m + j], -(*h)[j * m + i]);
        }
      }
    }
  }
  auto h28 = SmallHadamard(28);
  ASSERT_TRUE(h28.ok());
  for (int i = 0; i < 28; ++i)
    for (int j = 0; j < 28; ++j) EXPECT_EQ((*h28)[i * 28 + j], (*h28)[j * 28 + i]);
  // H_40 = H_20 (x) H_2.
  auto h20 = SmallHadamard(20);
  auto h40 = SmallHadamard(40);
  ASSERT_TRUE(h20.ok() && h40.ok());
  const int h2[2][2] = {{1, 1}, {1, -1}};
  for (int i = 0; i < 40; ++i)
    for (int j = 0; j < 40; ++j)
      ASSERT_EQ((*h40)[i * 40 + j], (*h20)[(i / 2) * 20 + j / 2] * h2[i % 2][j % 2]);
}

TEST(SmallHadamardTest, RejectsUnsupportedOrders) {
  for (int m : {0, -1, -4, 3, 6, 10, 24, 36, 44, 8192}) {
    auto h = SmallHadamard(m);
    ASSERT_FALSE(h.ok()) << m;
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument) << m;
  }
}

// ---------------------------------------------------------------------------------------------
// Size factorization.

TEST(FactorHadamardSizeTest, ModelSizes) {
  struct Case { int64_t n; int m; int pow2; };
  for (const Case& c : std::vector<Case>{{1, 1, 1},       {4, 1, 4},        {16, 1, 16},     {12, 12, 1},
                                         {20, 20, 1},     {28, 28, 1},      {24, 12, 2},     {48, 12, 4},
                                         {96, 12, 8},     {160, 20, 8},     {192, 12, 16},   {384, 12, 32},
                                         {768, 12, 64},   {1536, 12, 128},  {2560, 20, 128}, {3072, 12, 256},
                                         {4096, 1, 4096}, {5120, 20, 256},  {56, 28, 2},     {7168, 28, 256}}) {
    auto f = FactorHadamardSize(c.n);
    ASSERT_TRUE(f.ok()) << c.n << ": " << f.status().ToString();
    EXPECT_EQ(f->m, c.m) << c.n;
    EXPECT_EQ(f->pow2, c.pow2) << c.n;
    EXPECT_EQ(f->n(), c.n);
  }
}

TEST(FactorHadamardSizeTest, RejectsUnsupportedSizes) {
  // 72 = 36*2 and 132 = 44*3 have Hadamard matrices in principle but no factor we build.
  for (int64_t n : {int64_t{0}, int64_t{-4}, int64_t{3}, int64_t{6}, int64_t{7}, int64_t{9}, int64_t{10},
                    int64_t{14}, int64_t{36}, int64_t{72}, int64_t{132}, int64_t{1000},
                    kMaxHadamardSize * 2}) {
    auto f = FactorHadamardSize(n);
    ASSERT_FALSE(f.ok()) << n;
    EXPECT_EQ(f.status().code(), StatusCode::kInvalidArgument) << n;
    EXPECT_NE(f.status().message().find("12*2^k"), std::string::npos) << f.status().message();
    auto h = RandomHadamard::Create(n, 1);
    ASSERT_FALSE(h.ok()) << n;
    EXPECT_EQ(h.status().code(), StatusCode::kInvalidArgument) << n;
  }
}

// ---------------------------------------------------------------------------------------------
// Dense matrix and fast transform at every model size.

class RandomHadamardSizeTest : public ::testing::TestWithParam<int64_t> {};

TEST_P(RandomHadamardSizeTest, DenseMatchesDocumentedKroneckerAndIsOrthonormal) {
  const int64_t n = GetParam();
  auto h = RandomHadamard::Create(n, 1000 + n);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ASSERT_EQ(h->size(), n);
  const HadamardSize f = h->factors();
  const std::vector<double> dense = h->Dense();
  ASSERT_EQ(dense.size(), static_cast<size_t>(n * n));

  // Exactly D * (H_m (x) H_p) / sqrt(n), small factor outside.
  auto hm = SmallHadamard(f.m);
  auto hp = SmallHadamard(f.pow2);
  ASSERT_TRUE(hm.ok() && hp.ok());
  const double inv = 1.0 / std::sqrt(static_cast<double>(n));
  const std::vector<int8_t>& s = h->signs();
  int64_t mismatches = 0;
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      const int e = s[i] * (*hm)[(i / f.pow2) * f.m + j / f.pow2] *
                    (*hp)[(i % f.pow2) * f.pow2 + j % f.pow2];
      mismatches += dense[i * n + j] != e * inv;
    }
  }
  ASSERT_EQ(mismatches, 0);

  // H~ H~^T == I: the full Gram up to n = 1024, a sample of rows beyond (one row of the Gram
  // costs n^2 flops); the sample covers both ends of the first, a middle and the last chunk.
  Eigen::Map<const RowMatrix> H(dense.data(), n, n);
  double max_err = 0;
  if (n <= 1024) {
    const RowMatrix gram = H * H.transpose();
    max_err = (gram - RowMatrix::Identity(n, n)).cwiseAbs().maxCoeff();
  } else {
    std::vector<int64_t> sample = {0, 1, std::min<int64_t>(f.pow2, n - 1), f.pow2 - 1, n / 2, n - 2, n - 1};
    std::mt19937_64 gen(n);
    for (int k = 0; k < 5; ++k) sample.push_back(static_cast<int64_t>(gen() % n));
    for (int64_t i : sample) {
      const Eigen::RowVectorXd g = H.row(i) * H.transpose();
      for (int64_t j = 0; j < n; ++j) max_err = std::max(max_err, std::abs(g[j] - (i == j ? 1.0 : 0.0)));
    }
  }
  EXPECT_LT(max_err, 1e-12) << "n=" << n;
}

TEST_P(RandomHadamardSizeTest, FastTransformEqualsDenseProduct) {
  const int64_t n = GetParam();
  auto h = RandomHadamard::Create(n, 2000 + n);
  ASSERT_TRUE(h.ok());
  const std::vector<double> dense = h->Dense();
  Eigen::Map<const RowMatrix> H(dense.data(), n, n);
  const int64_t rows = n <= 1024 ? 8 : 3;
  const std::vector<double> x = GaussianRows(rows, n, 3000 + n);
  Eigen::Map<const RowMatrix> X(x.data(), rows, n);
  const RowMatrix want = X * H;
  const RowMatrix want_t = X * H.transpose();

  // Double.
  std::vector<double> yd = x, yd_t = x;
  h->ApplyRows(yd.data(), rows);
  h->ApplyTransposeRows(yd_t.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    const double norm = Norm(x.data() + r * n, n);
    double err = 0, err_t = 0;
    for (int64_t j = 0; j < n; ++j) {
      err = std::max(err, std::abs(yd[r * n + j] - want(r, j)));
      err_t = std::max(err_t, std::abs(yd_t[r * n + j] - want_t(r, j)));
    }
    EXPECT_LT(err / norm, 1e-12) << "n=" << n << " row " << r;
    EXPECT_LT(err_t / norm, 1e-12) << "n=" << n << " row " << r;
  }

  // Float: the reference is the double product of the float-rounded input.
  std::vector<float> xf(x.begin(), x.end());
  std::vector<double> xf_d(xf.begin(), xf.end());
  Eigen::Map<const RowMatrix> XF(xf_d.data(), rows, n);
  const RowMatrix want_f = XF * H;
  const RowMatrix want_ft = XF * H.transpose();
  std::vector<float> yf = xf, yf_t = xf;
  h->ApplyRows(yf.data(), rows);
  h->ApplyTransposeRows(yf_t.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    const double norm = Norm(xf_d.data() + r * n, n);
    double err = 0, err_t = 0;
    for (int64_t j = 0; j < n; ++j) {
      err = std::max(err, std::abs(yf[r * n + j] - want_f(r, j)));
      err_t = std::max(err_t, std::abs(yf_t[r * n + j] - want_ft(r, j)));
    }
    EXPECT_LT(err / norm, 1e-5) << "n=" << n << " row " << r;
    EXPECT_LT(err_t / norm, 1e-5) << "n=" << n << " row " << r;
  }
}

TEST_P(RandomHadamardSizeTest, TransposeInvertsAndNormIsPreserved) {
  const int64_t n = GetParam();
  auto h = RandomHadamard::Create(n, 4000 + n);
  ASSERT_TRUE(h.ok());
  const int64_t rows = 16;
  std::vector<double> x = GaussianRows(rows, n, 5000 + n);
  for (int64_t r = 0; r < rows; ++r)  // rows of very different scale
    for (int64_t j = 0; j < n; ++j) x[r * n + j] *= std::ldexp(1.0, static_cast<int>(r) - 8);

  std::vector<double> yd = x;
  h->ApplyRows(yd.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    const double nx = Norm(x.data() + r * n, n), ny = Norm(yd.data() + r * n, n);
    EXPECT_LT(std::abs(ny - nx) / nx, 1e-14) << "n=" << n << " row " << r;
  }
  h->ApplyTransposeRows(yd.data(), rows);
  std::vector<double> yd2 = x;  // the other order: H~^T then H~
  h->ApplyTransposeRows(yd2.data(), rows);
  h->ApplyRows(yd2.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    const double nx = Norm(x.data() + r * n, n);
    double err = 0, err2 = 0;
    for (int64_t j = 0; j < n; ++j) {
      err = std::max(err, std::abs(yd[r * n + j] - x[r * n + j]));
      err2 = std::max(err2, std::abs(yd2[r * n + j] - x[r * n + j]));
    }
    EXPECT_LT(err / nx, 1e-14) << "n=" << n << " row " << r;
    EXPECT_LT(err2 / nx, 1e-14) << "n=" << n << " row " << r;
  }

  std::vector<float> xf(x.begin(), x.end());
  std::vector<float> yf = xf;
  h->ApplyRows(yf.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    double nx = 0, ny = 0;
    for (int64_t j = 0; j < n; ++j) {
      nx += double{xf[r * n + j]} * xf[r * n + j];
      ny += double{yf[r * n + j]} * yf[r * n + j];
    }
    EXPECT_LT(std::abs(std::sqrt(ny) - std::sqrt(nx)) / std::sqrt(nx), 1e-6) << "n=" << n << " row " << r;
  }
  h->ApplyTransposeRows(yf.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    double nx = 0, err = 0;
    for (int64_t j = 0; j < n; ++j) {
      nx += double{xf[r * n + j]} * xf[r * n + j];
      err = std::max(err, std::abs(double{yf[r * n + j]} - xf[r * n + j]));
    }
    EXPECT_LT(err / std::sqrt(nx), 1e-6) << "n=" << n << " row " << r;
  }
}

std::string SizeName(const ::testing::TestParamInfo<int64_t>& info) {
  std::string name = "n";  // appended, not operator+: GCC 12 -Wrestrict false positive
  name += std::to_string(info.param);
  return name;
}
INSTANTIATE_TEST_SUITE_P(ModelSizes, RandomHadamardSizeTest, ::testing::ValuesIn(kModelSizes), SizeName);
INSTANTIATE_TEST_SUITE_P(EdgeSizes, RandomHadamardSizeTest, ::testing::ValuesIn(kEdgeSizes), SizeName);

// ---------------------------------------------------------------------------------------------
// Signs and seeding.

TEST(RandomHadamardTest, SameSeedSameSignsDifferentSeedDifferentSigns) {
  const int64_t n = 5120;
  auto a = RandomHadamard::Create(n, 7);
  auto b = RandomHadamard::Create(n, 7);
  auto c = RandomHadamard::Create(n, 8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->signs(), b->signs());
  int64_t differ = 0, negative = 0;
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_TRUE(a->signs()[i] == 1 || a->signs()[i] == -1);
    differ += a->signs()[i] != c->signs()[i];
    negative += a->signs()[i] < 0;
  }
  // Fair coins: both counts are Binomial(5120, 1/2), sd ~36; 10 sd either side.
  EXPECT_GT(differ, n / 2 - 360);
  EXPECT_LT(differ, n / 2 + 360);
  EXPECT_GT(negative, n / 2 - 360);
  EXPECT_LT(negative, n / 2 + 360);
  // Same seed transforms identically (bitwise).
  std::vector<float> x1(n), x2(n);
  for (int64_t i = 0; i < n; ++i) x1[i] = x2[i] = static_cast<float>(i % 17) - 8.0f;
  a->ApplyRows(x1.data(), 1);
  b->ApplyRows(x2.data(), 1);
  EXPECT_EQ(x1, x2);
}

TEST(RandomHadamardTest, SignsAreTheDocumentedEngineBits) {
  // sign[i] = -1 iff bit i % 64 of the (i / 64)-th mt19937_64 output is set. Golden values pin the
  // stream so a change of derivation (which would silently change exported models) is caught.
  auto h = RandomHadamard::Create(256, 0);
  ASSERT_TRUE(h.ok());
  std::mt19937_64 gen(0);
  for (int w = 0; w < 4; ++w) {
    const uint64_t word = gen();
    for (int b = 0; b < 64; ++b) ASSERT_EQ(h->signs()[w * 64 + b], ((word >> b) & 1) ? -1 : 1);
  }
  std::string first;
  for (int i = 0; i < 32; ++i) first += h->signs()[i] > 0 ? '+' : '-';
  EXPECT_EQ(first, "+-----++++---+---+++++-+--+-++--");
  // The sign stream does not depend on n: a smaller size is a prefix.
  auto small = RandomHadamard::Create(24, 0);
  ASSERT_TRUE(small.ok());
  EXPECT_TRUE(std::equal(small->signs().begin(), small->signs().end(), h->signs().begin()));
}

TEST(RandomHadamardTest, GoldenOutputIsBitExact) {
  // The transform only adds, subtracts and multiplies by +-1/sqrt(n) in a fixed order (no
  // reassociation, FMA by +-1 is exact), so its float output is the same bits on every platform
  // and optimization level; these values pin that. Inputs are small integers, exact in float.
  auto h = RandomHadamard::Create(768, 3);
  ASSERT_TRUE(h.ok());
  std::vector<float> x(768);
  for (int i = 0; i < 768; ++i) x[i] = static_cast<float>(i % 13 - 6);
  h->ApplyRows(x.data(), 1);
  EXPECT_EQ(x[0], -0x1.bb6798p-3f);
  EXPECT_EQ(x[1], -0x1.279b08p-4f);
  EXPECT_EQ(x[100], 0x1.2c38dcp+2f);
  EXPECT_EQ(x[767], 0x1.279a7p-2f);
  uint64_t fnv = 0xcbf29ce484222325ull;  // FNV-1a over the little-endian bytes of all outputs
  for (float v : x) {
    uint32_t bits;
    std::memcpy(&bits, &v, sizeof bits);
    for (int k = 0; k < 4; ++k) {
      fnv ^= (bits >> (8 * k)) & 0xff;
      fnv *= 0x100000001b3ull;
    }
  }
  EXPECT_EQ(fnv, 0x671d498837e5babdull);
}

TEST(RandomHadamardTest, PlainHasUnitSignsAndDiffersOnlyByD) {
  for (int64_t n : {16, 24, 28, 160, 768}) {
    auto plain = RandomHadamard::CreatePlain(n);
    auto rnd = RandomHadamard::Create(n, 99);
    ASSERT_TRUE(plain.ok() && rnd.ok());
    for (int8_t s : plain->signs()) ASSERT_EQ(s, 1);
    const std::vector<double> p = plain->Dense(), r = rnd->Dense();
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) ASSERT_EQ(r[i * n + j], rnd->signs()[i] * p[i * n + j]);
  }
}

TEST(RandomHadamardTest, CopiesShareStateAndBehaveIdentically) {
  auto h = RandomHadamard::Create(768, 5);
  ASSERT_TRUE(h.ok());
  const RandomHadamard copy = *h;
  EXPECT_EQ(&copy.signs(), &h->signs());  // shared, not duplicated
  std::vector<double> x = GaussianRows(2, 768, 1), y = x;
  h->ApplyRows(x.data(), 2);
  copy.ApplyRows(y.data(), 2);
  EXPECT_EQ(x, y);
}

TEST(RandomHadamardTest, RowStrideRotatesASliceInPlace) {
  // Rotate columns [0, 768) of a 3 x 1000 buffer; the other columns must be untouched.
  const int64_t n = 768, stride = 1000, rows = 3;
  auto h = RandomHadamard::Create(n, 11);
  ASSERT_TRUE(h.ok());
  std::vector<double> wide = GaussianRows(rows, stride, 12);
  const std::vector<double> orig = wide;
  std::vector<double> packed(rows * n);
  for (int64_t r = 0; r < rows; ++r) std::copy_n(orig.begin() + r * stride, n, packed.begin() + r * n);
  h->ApplyRows(wide.data(), rows, stride);
  h->ApplyRows(packed.data(), rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t j = 0; j < n; ++j) ASSERT_EQ(wide[r * stride + j], packed[r * n + j]);
    for (int64_t j = n; j < stride; ++j) ASSERT_EQ(wide[r * stride + j], orig[r * stride + j]);
  }
}

// ---------------------------------------------------------------------------------------------
// The point of the rotation: outliers are spread over all channels.

TEST(RandomHadamardTest, SpreadsAnOutlier) {
  for (int64_t n : {160, 768, 5120}) {
    SCOPED_TRACE("n=" + std::to_string(n));
    auto h = RandomHadamard::Create(n, 21);
    ASSERT_TRUE(h.ok());
    // A pure spike becomes perfectly flat: every entry of a Hadamard row has magnitude 1/sqrt(n).
    std::vector<float> spike(n, 0.0f);
    spike[n / 3] = 50.0f;
    EXPECT_NEAR(MaxOverRms(spike.data(), n), std::sqrt(static_cast<double>(n)), 1e-3);
    h->ApplyRows(spike.data(), 1);
    EXPECT_NEAR(MaxOverRms(spike.data(), n), 1.0, 1e-5);
    for (float v : spike) EXPECT_NEAR(std::abs(v), 50.0 / std::sqrt(static_cast<double>(n)), 1e-4);

    // Gaussian channels plus one channel 100 sigma out, like the massive activations of Mamba's
    // residual stream: max/rms falls from ~sqrt(n) / sqrt(1 + n / 1e4) to the Gaussian tail's ~4.
    const std::vector<double> g = GaussianRows(1, n, 22);
    std::vector<float> x(g.begin(), g.end());
    x[17] = 100.0f;
    const double before = MaxOverRms(x.data(), n);
    h->ApplyRows(x.data(), 1);
    const double after = MaxOverRms(x.data(), n);
    std::printf("n=%lld outlier max/rms: before %.2f after %.2f\n", static_cast<long long>(n), before, after);
    EXPECT_GT(before, 12.0);
    EXPECT_LT(after, 5.0);
    EXPECT_LT(after * 4, before);
  }
}

// ---------------------------------------------------------------------------------------------
// Speed (reported): the forward transform runs per token online.

TEST(RandomHadamardTest, FastTransformThroughput) {
  for (int64_t n : {768, 1536, 2560, 3072, 5120}) {
    auto h = RandomHadamard::Create(n, 1);
    ASSERT_TRUE(h.ok());
    const int64_t rows = 256;
    std::vector<double> g = GaussianRows(rows, n, 2);
    std::vector<float> x(g.begin(), g.end());
    h->ApplyRows(x.data(), rows);  // warm up
    h->ApplyTransposeRows(x.data(), rows);
    const int reps = 8;
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < reps; ++k) {
      h->ApplyRows(x.data(), rows);
      h->ApplyTransposeRows(x.data(), rows);
    }
    const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count();
    const double per_row = ns / (2.0 * reps * rows);
    std::printf("n=%lld m=%d: %.0f ns/row (float, %.2f ns/element)\n", static_cast<long long>(n),
                h->factors().m, per_row, per_row / n);
    // Reported, not asserted: a wall-clock bound would be flaky under sanitizers, Debug builds and
    // loaded CI machines. The O(n log n) structure is what the kernels guarantee.
    // Round trips kept the data intact.
    for (int64_t i = 0; i < rows * n; ++i) ASSERT_NEAR(x[i], g[i], 1e-4 * (1 + std::abs(g[i])));
  }
}

}  // namespace
}  // namespace mq::quant
