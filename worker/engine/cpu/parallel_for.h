// Splits a loop over [0, n) into contiguous chunks run on the CPU's cores (the calling thread
// takes the first chunk). Used for the loops OpenBLAS does not cover: the scan and INT8 products.
#pragma once

#include <cstdint>
#include <functional>

namespace mq::cpu {

// Threads used by ParallelFor (default: hardware concurrency). 1 disables threading.
void SetCpuThreads(int threads);
int CpuThreads();

// Runs fn(begin, end) over chunks of at least `min_chunk` items.
void ParallelFor(int64_t n, int64_t min_chunk, const std::function<void(int64_t, int64_t)>& fn);

}  // namespace mq::cpu
