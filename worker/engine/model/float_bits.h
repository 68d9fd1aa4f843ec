// A float's IEEE-754 bits and back, the same on the host and on the device (plain C++ when not
// under nvcc): the state cache's stores (model/state_dtype.h) and the decode step's exact math
// (model/step_math.h) build and take apart floats with these.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MQ_BITS_HD __host__ __device__ __forceinline__
#else
#define MQ_BITS_HD inline
#endif

namespace mq {

MQ_BITS_HD uint32_t FloatBits(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return u;
#endif
}
MQ_BITS_HD float BitsFloat(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, 4);
  return x;
#endif
}

}  // namespace mq
