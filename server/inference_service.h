// mambaquant.v1.InferenceService: Generate (server streaming), Score and Classify, routed to workers by the
// InferenceRouter. The client's cancellation, deadline or disconnect cancels the worker's call.
#pragma once

#include "mambaquant/v1/inference.grpc.pb.h"
#include "service_deps.h"

namespace mq::server {

class InferenceServiceImpl final : public mambaquant::v1::InferenceService::CallbackService {
 public:
  explicit InferenceServiceImpl(ServiceDeps deps) : deps_(deps) {}
  grpc::ServerWriteReactor<mambaquant::v1::GenerateResponse>* Generate(
      grpc::CallbackServerContext* ctx, const mambaquant::v1::GenerateRequest* req) override;
  grpc::ServerUnaryReactor* Score(grpc::CallbackServerContext* ctx, const mambaquant::v1::ScoreRequest* req,
                                  mambaquant::v1::ScoreResponse* resp) override;
  grpc::ServerUnaryReactor* Classify(grpc::CallbackServerContext* ctx, const mambaquant::v1::ClassifyRequest* req,
                                     mambaquant::v1::ClassifyResponse* resp) override;

 private:
  ServiceDeps deps_;
};

}  // namespace mq::server
