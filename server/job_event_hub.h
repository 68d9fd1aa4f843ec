// In-process fan-out of persisted job changes to WatchJob streams. Publish is called after the
// change is committed; subscribers receive full snapshots, so a subscriber that coalesces events
// loses granularity but never state.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::server {

class JobEventHub {
 public:
  class Subscriber {
   public:
    virtual ~Subscriber() = default;
    // Called without hub locks held, possibly concurrently from several threads; must not block.
    virtual void OnJob(const mambaquant::v1::Job& job) = 0;
    // The server is draining: finish the stream.
    virtual void OnShutdown() = 0;
  };

  // Returns a token for Unsubscribe. After Shutdown, new subscribers get OnShutdown at once.
  uint64_t Subscribe(const std::string& job_id, std::shared_ptr<Subscriber> subscriber);
  void Unsubscribe(uint64_t token);
  void Publish(const mambaquant::v1::Job& job);
  void Shutdown();
  size_t subscriber_count();

 private:
  struct Entry {
    std::string job_id;
    std::shared_ptr<Subscriber> subscriber;
  };
  absl::Mutex mu_;
  uint64_t next_token_ ABSL_GUARDED_BY(mu_) = 1;
  bool shutdown_ ABSL_GUARDED_BY(mu_) = false;
  std::map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace mq::server
