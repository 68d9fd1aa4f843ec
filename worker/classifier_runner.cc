#include "classifier_runner.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <numeric>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "classify_request.h"
#include "inference_request.h"

namespace mq::worker {

using mambaquant::v1::ClassifyRequest;
using mambaquant::v1::ClassifyResponse;

ClassifierRunner::ClassifierRunner(std::unique_ptr<ImageClassifier> classifier, std::vector<std::string> labels,
                                   uint64_t bytes, int max_waiting)
    : classifier_(std::move(classifier)), labels_(std::move(labels)), bytes_(bytes), max_waiting_(std::max(1, max_waiting)) {
  thread_ = std::thread([this] { Loop(); });
}

ClassifierRunner::~ClassifierRunner() {
  std::deque<Job> dropped;
  {
    std::lock_guard<std::mutex> l(mu_);
    stopping_ = true;
    dropped.swap(queue_);
    cv_.notify_all();
  }
  thread_.join();
  for (auto& j : dropped) j.done(absl::CancelledError("the model was unloaded"));
}

absl::Status ClassifierRunner::Submit(const std::string& id, const ClassifyRequest& request, const std::string& model,
                                      Done done) {
  // The server checked the request already; the worker trusts nothing it did not check itself.
  absl::Status s = CheckClassifyRequest(request);
  if (s.ok()) {
    const VimConfig& c = classifier_->config();
    s = CheckClassifyForModel(request, c.in_chans, c.img_size, c.num_classes);
  }
  if (!s.ok()) return s;
  Job job{id, model, ClassifyPixels(request), request.shape(0), ClassifyTopK(request), std::move(done)};
  std::lock_guard<std::mutex> l(mu_);
  if (stopping_) return absl::UnavailableError("the model is being unloaded");
  if (static_cast<int>(queue_.size()) >= max_waiting_)
    return absl::ResourceExhaustedError(absl::StrCat("the model's queue is full (", max_waiting_, " calls wait); retry later"));
  queue_.push_back(std::move(job));
  cv_.notify_all();
  return absl::OkStatus();
}

void ClassifierRunner::Cancel(const std::string& id) {
  Done done;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = std::find_if(queue_.begin(), queue_.end(), [&](const Job& j) { return j.id == id; });
    if (it == queue_.end()) return;
    done = std::move(it->done);
    queue_.erase(it);
  }
  done(absl::CancelledError("the call was cancelled"));
}

ClassifierRunner::Stats ClassifierRunner::stats() const {
  std::lock_guard<std::mutex> l(mu_);
  return Stats{running_ ? 1 : 0, static_cast<int>(queue_.size())};
}

void ClassifierRunner::Loop() {
  for (;;) {
    Job job;
    {
      std::unique_lock<std::mutex> l(mu_);
      cv_.wait(l, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      job = std::move(queue_.front());
      queue_.pop_front();
      running_ = true;
    }
    auto result = Run(job);
    {
      std::lock_guard<std::mutex> l(mu_);
      running_ = false;
    }
    job.done(std::move(result));
  }
}

absl::StatusOr<ClassifyResponse> ClassifierRunner::Run(const Job& job) {
  const int64_t classes = classifier_->config().num_classes;
  const int64_t numel = classifier_->config().image_numel();
  std::vector<float> logits(static_cast<size_t>(job.batch * classes));
  // The classifier takes at most max_batch() images a call.
  const int64_t step = std::max<int64_t>(1, classifier_->max_batch());
  for (int64_t first = 0; first < job.batch; first += step) {
    const int64_t n = std::min(step, job.batch - first);
    Status s = classifier_->Classify(job.pixels.data() + first * numel, n, logits.data() + first * classes);
    if (!s.ok()) return ToAbslStatus(s);
  }
  // Finite pixels can still overflow the forward (values near FLT_MAX): an answer of NaN logits and
  // probabilities is not a classification. Refused, naming the first such image.
  for (int64_t i = 0; i < job.batch * classes; ++i) {
    if (!std::isfinite(logits[static_cast<size_t>(i)])) {
      return absl::InvalidArgumentError(absl::StrCat("image ", i / classes,
                                                     ": the model's logits are not finite for these pixel values "
                                                     "(their magnitude overflows the forward; send normalized images)"));
    }
  }
  ClassifyResponse out;
  out.set_model(job.model);
  out.set_num_classes(classes);
  out.set_logits(reinterpret_cast<const char*>(logits.data()), logits.size() * sizeof(float));
  std::vector<int64_t> order(static_cast<size_t>(classes));
  for (int64_t b = 0; b < job.batch; ++b) {
    const float* row = logits.data() + b * classes;
    const float max = *std::max_element(row, row + classes);
    double sum = 0;
    for (int64_t k = 0; k < classes; ++k) sum += std::exp(static_cast<double>(row[k]) - max);
    std::iota(order.begin(), order.end(), 0);
    // Most likely first; equal logits: the lower class id first.
    std::partial_sort(order.begin(), order.begin() + job.top_k, order.end(), [&](int64_t a, int64_t c) {
      return row[a] > row[c] || (row[a] == row[c] && a < c);
    });
    auto* image = out.add_images();
    for (int32_t k = 0; k < job.top_k; ++k) {
      const int64_t id = order[static_cast<size_t>(k)];
      auto* t = image->add_top();
      t->set_class_id(id);
      if (static_cast<size_t>(id) < labels_.size()) t->set_label(labels_[static_cast<size_t>(id)]);
      t->set_logit(row[id]);
      t->set_probability(static_cast<float>(std::exp(static_cast<double>(row[id]) - max) / sum));
    }
  }
  return out;
}

std::vector<std::string> ReadClassLabels(const std::string& config_path, int64_t num_classes) {
  std::vector<std::string> labels(static_cast<size_t>(num_classes));
  std::ifstream in(config_path, std::ios::binary);
  const nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("id2label") || !j["id2label"].is_object()) return labels;
  for (const auto& [key, value] : j["id2label"].items()) {
    if (!value.is_string() || key.empty() || key.size() > 9 || key.find_first_not_of("0123456789") != std::string::npos) continue;
    const int64_t id = std::stoll(key);
    // A label is informational: bounded so one class cannot bloat every answer.
    if (id < num_classes) labels[static_cast<size_t>(id)] = value.get<std::string>().substr(0, 256);
  }
  return labels;
}

}  // namespace mq::worker
