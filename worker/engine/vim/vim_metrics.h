// Classification quality of a model's logits, alone and against a reference model's: top-1
// accuracy, top-1 agreement and the mean KL(reference ‖ candidate) of the softmaxes.
#pragma once

#include <cstdint>
#include <vector>

namespace mq {

// Index of the largest logit of each row ([rows, classes]); ties go to the lowest index.
std::vector<int64_t> TopClasses(const std::vector<float>& logits, int64_t classes);
// Fraction of `predicted` equal to `labels` (same length, non-empty).
double Accuracy(const std::vector<int64_t>& predicted, const std::vector<int64_t>& labels);

struct LogitComparison {
  double top1_agreement = 0.0;  // fraction of rows whose argmax is the same
  double mean_kl = 0.0;         // mean over rows of KL(softmax(reference) ‖ softmax(candidate)), nats
};
LogitComparison CompareLogits(const std::vector<float>& reference, const std::vector<float>& candidate,
                              int64_t classes);

}  // namespace mq
