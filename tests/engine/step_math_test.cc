// model/step_math.h: the decode step's float arithmetic that the CPU reference and the GPU's
// decode kernels share. Here (CPU, in CI): its exp, 2^x and log1p are accurate to 2, 2 and 3 ulp over
// their ranges (against long double), exact where they must be (powers of two, e^0), propagate
// NaN and saturate as documented; the step functions sum in the documented order; and the CPU
// reference's scan runs exactly these operations. The GPU side (the device computing the same
// bits) is checked by tests/engine/cuda_state_gpu_test.cc (decode state bit-identical to the CPU's).
#include "model/step_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "cpu/selective_scan.h"

namespace mq {
namespace {

namespace sm = step_math;

// |got − want| in units of the float ulp at want.
double UlpError(float got, long double want) {
  const float wf = static_cast<float>(want);
  if (std::isinf(wf)) return std::isinf(got) && (got > 0) == (wf > 0) ? 0.0 : 1e9;
  const float a = std::fabs(wf);
  const float ulp = a >= std::numeric_limits<float>::min()
                        ? std::nextafter(a, std::numeric_limits<float>::infinity()) - a
                        : std::numeric_limits<float>::denorm_min();
  return static_cast<double>(std::fabs(static_cast<long double>(got) - want) / ulp);
}

// The worst ulp error of got(x) against want(x) (long double) over xs; fails at the first x beyond
// bound, naming it.
template <typename Got, typename Want>
double WorstUlp(const char* what, const std::vector<float>& xs, double bound, Got got, Want want) {
  double worst = 0;
  for (float x : xs) {
    const double e = UlpError(got(x), want(static_cast<long double>(x)));
    EXPECT_LE(e, bound) << what << "(" << x << ")";
    if (e > bound) break;
    worst = std::max(worst, e);
  }
  std::printf("%s: worst %.2f ulp over %zu inputs\n", what, worst, xs.size());
  return worst;
}

std::vector<float> Sweep(float lo, float hi, int grid, int random, uint32_t seed) {
  std::vector<float> v;
  for (int i = 0; i <= grid; ++i) v.push_back(lo + (hi - lo) * static_cast<float>(i) / static_cast<float>(grid));
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> d(lo, hi);
  for (int i = 0; i < random; ++i) v.push_back(d(g));
  return v;
}

TEST(StepMathTest, ExpIsWithinTwoUlp) {
  WorstUlp("Exp", Sweep(-87.0f, 88.0f, 200000, 200000, 1), 2.0, sm::Exp, [](long double x) { return std::exp(x); });
  EXPECT_EQ(sm::Exp(0.0f), 1.0f);
  EXPECT_EQ(sm::Exp(-200.0f), 0.0f);
  EXPECT_EQ(sm::Exp(-std::numeric_limits<float>::infinity()), 0.0f);
  EXPECT_TRUE(std::isinf(sm::Exp(89.5f)));
  EXPECT_TRUE(std::isinf(sm::Exp(std::numeric_limits<float>::infinity())));
  EXPECT_TRUE(std::isnan(sm::Exp(std::nanf(""))));
  // Subnormal results: rounded once, close to the true value.
  EXPECT_LE(UlpError(sm::Exp(-95.0f), std::exp(-95.0L)), 2.0);
}

TEST(StepMathTest, Exp2IsWithinTwoUlpAndExactOnIntegers) {
  WorstUlp("Exp2", Sweep(-125.0f, 127.0f, 200000, 200000, 2), 2.0, sm::Exp2, [](long double y) { return std::exp2(y); });
  for (int k = -149; k <= 127; ++k) ASSERT_EQ(sm::Exp2(static_cast<float>(k)), std::ldexp(1.0f, k)) << k;
  EXPECT_EQ(sm::Exp2(-151.0f), 0.0f);
  EXPECT_TRUE(std::isinf(sm::Exp2(128.0f)));
  EXPECT_TRUE(std::isnan(sm::Exp2(std::nanf(""))));
}

TEST(StepMathTest, Log1pIsWithinThreeUlp) {
  std::vector<float> ys = {0.0f, 1e-30f, 1e-10f, 1e-7f, 5.9e-8f, 1e-3f, 0.5f, 1.0f, 2.0f, 4.85e8f};
  std::mt19937 g(3);
  std::uniform_real_distribution<float> lg(-30.0f, 9.0f);
  for (int i = 0; i < 400000; ++i) ys.push_back(std::pow(10.0f, lg(g)));
  WorstUlp("Log1p", ys, 3.0, sm::Log1p, [](long double y) { return std::log1p(y); });
  EXPECT_EQ(sm::Log1p(0.0f), 0.0f);
  EXPECT_TRUE(std::isinf(sm::Log1p(std::numeric_limits<float>::infinity())));
  EXPECT_TRUE(std::isnan(sm::Log1p(std::nanf(""))));
}

TEST(StepMathTest, ActivationsFollowTheirDefinitions) {
  for (float x : Sweep(-60.0f, 60.0f, 20000, 20000, 4)) {
    const long double lx = x;
    ASSERT_LE(UlpError(sm::Silu(x), lx / (1 + std::exp(-lx))), 4.0) << x;
    ASSERT_LE(UlpError(sm::SmoothSilu(x, 0.7f), lx / (1 + std::exp(-static_cast<long double>(0.7f * x)))), 4.0) << x;
    const long double sp = x > 20.0f ? lx : std::log1p(std::exp(lx));
    if (x > -80.0f) ASSERT_LE(UlpError(sm::Softplus(x), sp), 6.0) << x;
  }
  EXPECT_EQ(sm::Softplus(25.0f), 25.0f);  // torch's threshold: the identity above 20
}

// The order and the rounding of each step are the contract: recompute them here one by one.
TEST(StepMathTest, StepFunctionsRoundEachOperationInOrder) {
  const float prev[3] = {0.25f, -1.5f, 3.0f}, w[4] = {0.1f, 0.2f, -0.3f, 0.4f};
  float acc = 0.05f;
  for (int k = 0; k < 3; ++k) {
    volatile float p = w[k] * prev[k];  // volatile: no fused multiply-add in the expected value
    acc = acc + p;
  }
  volatile float last = w[3] * 1.75f;
  acc = acc + last;
  EXPECT_EQ(sm::ConvStepSilu(prev, w, 0.05f, 4, 1.75f), sm::Silu(acc));
  // Σ in ascending order: 1e8 + 1 − 1e8 + … differs from any other order.
  const float prod[4] = {1e8f, 1.0f, -1e8f, 1.0f};
  EXPECT_EQ(sm::ScanOutput(prod, 4, 0.0f, 0.0f, 1.0f), 1.0f);
  const float h = 0.5f, a2 = -1.3f, dt = 0.02f, dtu = 0.03f, b = -0.7f;
  volatile float decay = sm::Exp2(dt * a2), x1 = decay * h, x2 = dtu * b;
  EXPECT_EQ(sm::ScanState(h, a2, dt, dtu, b), x1 + x2);
}

// The CPU reference's scan (cpu/selective_scan.cc) is exactly step_math's operations: state and y
// equal a recomputation from ScanState / Mul / Add / ScanOutput bit for bit.
TEST(StepMathTest, CpuSelectiveScanRunsTheseOperations) {
  const int64_t L = 3, E = 5, N = 16;
  std::mt19937 g(5);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> u(L * E), delta(L * E), A(E * N), bc(L * 2 * N), D(E), h(E * N), y(L * E);
  for (auto& v : u) v = nd(g);
  for (auto& v : delta) v = std::fabs(nd(g)) * 0.1f;
  for (auto& v : A) v = -std::exp(nd(g));
  for (auto& v : bc) v = nd(g);
  for (auto& v : D) v = nd(g);
  for (auto& v : h) v = nd(g);
  std::vector<float> h_want = h, y_want(L * E);
  for (int64_t c = 0; c < E; ++c)
    for (int64_t l = 0; l < L; ++l) {
      const float dt = delta[l * E + c], uu = u[l * E + c];
      volatile float dtu = dt * uu;
      float prod[16];
      for (int64_t n = 0; n < N; ++n) {
        float& hn = h_want[c * N + n];
        hn = sm::ScanState(hn, sm::ScanA2(A[c * N + n]), dt, dtu, bc[l * 2 * N + n]);
        prod[n] = sm::Mul(hn, bc[l * 2 * N + N + n]);
      }
      y_want[l * E + c] = sm::ScanOutput(prod, N, D[c], uu, 1.0f);
    }
  cpu::SelectiveScanParams p;
  p.batch = 1, p.seqlen = L, p.channels = E, p.state = N;
  p.u = u.data(), p.delta = delta.data(), p.A = A.data(), p.B = bc.data(), p.C = bc.data() + N, p.bc_stride = 2 * N;
  p.D = D.data(), p.h = h.data(), p.y = y.data();
  cpu::SelectiveScan(p);
  for (size_t i = 0; i < h.size(); ++i) ASSERT_EQ(h[i], h_want[i]) << i;
  for (size_t i = 0; i < y.size(); ++i) ASSERT_EQ(y[i], y_want[i]) << i;
}

}  // namespace
}  // namespace mq
