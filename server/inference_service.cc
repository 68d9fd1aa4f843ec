#include "inference_service.h"

#include "finished_reactor.h"

namespace mq::server {

grpc::ServerWriteReactor<mambaquant::v1::GenerateResponse>* InferenceServiceImpl::Generate(
    grpc::CallbackServerContext* ctx, const mambaquant::v1::GenerateRequest*) {
  absl::Status s = deps_.auth->CheckClient(*ctx);
  if (!s.ok()) return new FinishedWriteReactor<mambaquant::v1::GenerateResponse>(ToGrpcStatus(s));
  return new FinishedWriteReactor<mambaquant::v1::GenerateResponse>(grpc::Status(
      grpc::StatusCode::UNIMPLEMENTED,
      "Generate is reserved and not implemented in this release: download a quantized model with "
      "`mqctl models download` and run it with `mq-engine`"));
}

}  // namespace mq::server
