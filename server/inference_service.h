// mambaquant.v1.InferenceService: reserved. Generate answers UNIMPLEMENTED until inference
// workers exist; the proto is the intended contract.
#pragma once

#include "mambaquant/v1/inference.grpc.pb.h"
#include "service_deps.h"

namespace mq::server {

class InferenceServiceImpl final : public mambaquant::v1::InferenceService::CallbackService {
 public:
  explicit InferenceServiceImpl(ServiceDeps deps) : deps_(deps) {}
  grpc::ServerWriteReactor<mambaquant::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const mambaquant::v1::GenerateRequest* req) override;

 private:
  ServiceDeps deps_;
};

}  // namespace mq::server
