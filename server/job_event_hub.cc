#include "job_event_hub.h"

#include <vector>

namespace mq::server {

uint64_t JobEventHub::Subscribe(const std::string& job_id, std::shared_ptr<Subscriber> subscriber) {
  uint64_t token;
  bool shutdown;
  {
    absl::MutexLock lock(&mu_);
    token = next_token_++;
    shutdown = shutdown_;
    if (!shutdown) entries_[token] = Entry{job_id, subscriber};
  }
  if (shutdown) subscriber->OnShutdown();
  return token;
}

void JobEventHub::Unsubscribe(uint64_t token) {
  absl::MutexLock lock(&mu_);
  entries_.erase(token);
}

void JobEventHub::Publish(const mambaquant::v1::Job& job) {
  std::vector<std::shared_ptr<Subscriber>> targets;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [token, entry] : entries_) {
      if (entry.job_id == job.id()) targets.push_back(entry.subscriber);
    }
  }
  for (const auto& s : targets) s->OnJob(job);
}

void JobEventHub::Shutdown() {
  std::map<uint64_t, Entry> entries;
  {
    absl::MutexLock lock(&mu_);
    shutdown_ = true;
    entries.swap(entries_);
  }
  for (const auto& [token, entry] : entries) entry.subscriber->OnShutdown();
}

size_t JobEventHub::subscriber_count() {
  absl::MutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace mq::server
