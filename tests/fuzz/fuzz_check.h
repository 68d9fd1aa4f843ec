// An invariant of a fuzz target: a violation aborts, which libFuzzer and the replay test report.
#pragma once

#include <cstdio>
#include <cstdlib>

#define MQ_FUZZ_CHECK(cond)                                                       \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)
