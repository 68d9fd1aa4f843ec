#include "cpu/parallel_for.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

namespace mq::cpu {
namespace {
std::atomic<int> g_threads{0};
}

void SetCpuThreads(int threads) { g_threads = std::max(1, threads); }

int CpuThreads() {
  int t = g_threads.load();
  if (t == 0) t = std::max(1u, std::thread::hardware_concurrency());
  return t;
}

void ParallelFor(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(CpuThreads(), std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk)));
  if (chunks <= 1) {
    fn(0, n);
    return;
  }
  const int64_t step = (n + chunks - 1) / chunks;
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(chunks - 1));
  for (int64_t c = 1; c < chunks; ++c) {
    const int64_t b = c * step, e = std::min(n, b + step);
    if (b < e) threads.emplace_back(fn, b, e);
  }
  fn(0, std::min(n, step));
  for (auto& t : threads) t.join();
}

}  // namespace mq::cpu
