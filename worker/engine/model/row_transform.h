// An online transform applied to activation rows before a quantized product (x <- x·M), e.g.
// the R2 Hadamard at out_proj. Implementations: a fast Hadamard, or a dense rotation when the
// KLT makes M = K·H̃ non-Hadamard.
#pragma once

#include <cstdint>
#include <string>

namespace mq {

class RowTransform {
 public:
  virtual ~RowTransform() = default;
  virtual int64_t size() const = 0;
  // x[r, :] <- x[r, :] · M for each of `rows` contiguous rows of length size().
  virtual void ApplyRows(float* x, int64_t rows) const = 0;
  // Short description for reports ("hadamard(768)", "dense(768)").
  virtual std::string Describe() const = 0;
};

}  // namespace mq
