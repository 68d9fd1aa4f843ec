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

class DenseRowTransform : public RowTransform {
 public:
  // m: [n, n] row-major; rows are multiplied on the right (x ← x·m).
  DenseRowTransform(std::vector<float> m, int64_t n) : m_(std::move(m)), n_(n) {}
  int64_t size() const override { return n_; }
  void ApplyRows(float* x, int64_t rows) const override;
  std::string Describe() const override;
  const std::vector<float>& matrix() const { return m_; }

 private:
  std::vector<float> m_;
  int64_t n_;
};

}  // namespace mq::quant
