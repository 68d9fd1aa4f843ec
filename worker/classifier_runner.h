// A Vision Mamba model a worker serves: its ImageClassifier (CPU, or the GPU one of the backend
// plugin) and one thread that runs the model's Classify calls one at a time in arrival order —
// a classifier's buffers are per instance, and the Serve stream's reader must never compute.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mambaquant/v1/inference.pb.h"
#include "vim/image_classifier.h"

namespace mq::worker {

class ClassifierRunner {
 public:
  using Done = std::function<void(absl::StatusOr<mambaquant::v1::ClassifyResponse>)>;
  struct Stats {
    int running = 0;
    int waiting = 0;
  };

  // labels: config.json id2label by class id ("" where absent); bytes: what the model holds, for
  // the memory budget; max_waiting: calls queued at most behind the running one.
  ClassifierRunner(std::unique_ptr<ImageClassifier> classifier, std::vector<std::string> labels, uint64_t bytes,
                   int max_waiting);
  // Waiting calls end with CANCELLED; the running one finishes first.
  ~ClassifierRunner();

  // Checks the request against the model (INVALID_ARGUMENT) and queues it; RESOURCE_EXHAUSTED
  // when max_waiting calls wait. `done` runs once, on the runner's thread (or here on error).
  absl::Status Submit(const std::string& id, const mambaquant::v1::ClassifyRequest& request, const std::string& model,
                      Done done);
  // A waiting call ends with CANCELLED; a running one finishes (a batch is not interruptible).
  void Cancel(const std::string& id);
  Stats stats() const;
  const ImageClassifier& classifier() const { return *classifier_; }
  uint64_t bytes() const { return bytes_; }

 private:
  struct Job {
    std::string id;
    std::string model;
    std::vector<float> pixels;
    int64_t batch = 0;
    int32_t top_k = 1;
    Done done;
  };
  void Loop();
  absl::StatusOr<mambaquant::v1::ClassifyResponse> Run(const Job& job);

  const std::unique_ptr<ImageClassifier> classifier_;
  const std::vector<std::string> labels_;
  const uint64_t bytes_;
  const int max_waiting_;
  mutable std::mutex mu_;  // guards the fields below
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool running_ = false;
  bool stopping_ = false;
  std::thread thread_;
};

// The labels of config.json's id2label for classes 0..num_classes-1 ("" where absent or not a
// string); all empty when the file has none.
std::vector<std::string> ReadClassLabels(const std::string& config_path, int64_t num_classes);

}  // namespace mq::worker
