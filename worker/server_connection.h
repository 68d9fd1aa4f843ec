// The worker's connection to mq-server: the WorkerService stub and the credentials every call
// carries.
#pragma once

#include <memory>
#include <string>

#include "absl/time/time.h"
#include "credentials.h"
#include "mambaquant/v1/worker.grpc.pb.h"

namespace mq::worker {

struct ServerConnection {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<mambaquant::v1::WorkerService::Stub> stub;
  std::string token;

  // Adds the token and, when positive, a deadline.
  void Prepare(grpc::ClientContext* ctx, absl::Duration timeout = absl::ZeroDuration()) const {
    PrepareClientContext(ctx, token, timeout);
  }
};

}  // namespace mq::worker
