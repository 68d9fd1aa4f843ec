// Online rotations as RowTransforms: the fast randomized Hadamard (R2 of QuaRot and MambaQuant)
// and a dense rotation (when a KLT makes the matrix non-Hadamard).
#pragma once

#include <cstdint>
#include <vector>

#include "model/row_transform.h"
#include "quant/hadamard.h"

namespace mq::quant {

class HadamardRowTransform : public RowTransform {
 public:
  explicit HadamardRowTransform(RandomHadamard h, uint64_t seed) : h_(std::move(h)), seed_(seed) {}
  int64_t size() const override { return h_.size(); }
  void ApplyRows(float* x, int64_t rows) const override { h_.ApplyRows(x, rows); }
  std::string Describe() const override;
  const RandomHadamard& hadamard() const { return h_; }
  uint64_t seed() const { return seed_; }

 private:
  RandomHadamard h_;
  uint64_t seed_;
};

}  // namespace mq::quant
