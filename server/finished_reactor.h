// Reactors that finish at once with a status: the answer of a streaming method to a call it
// rejects before streaming (bad credentials, bad arguments, unknown ids).
#pragma once

#include <grpcpp/support/server_callback.h>

namespace mq::server {

template <typename Response>
class FinishedWriteReactor : public grpc::ServerWriteReactor<Response> {
 public:
  explicit FinishedWriteReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

template <typename Request>
class FinishedReadReactor : public grpc::ServerReadReactor<Request> {
 public:
  explicit FinishedReadReactor(const grpc::Status& status) { this->Finish(status); }
  void OnDone() override { delete this; }
};

}  // namespace mq::server
