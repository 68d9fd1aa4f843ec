// inference.GRPCInferenceService: the Open Inference Protocol (KServe v2) gRPC API as Triton
// defines it (proto/inference/grpc_service.proto), so Triton and KServe clients work unchanged.
//
// A model is a registry model ("name", version "" = latest, or a version number). Its one input is
// `input_ids` INT64 [1, n] (prompt token ids); its outputs are `output_ids` INT64 [1, g] (the
// generated ids) and, on request, `logits` FP32 [1, vocab] (the next-token logits after the
// prompt). Sampling and stopping come from the request parameters. ModelInfer answers once with
// the whole generation; ModelStreamInfer sends one response per generated token and then an empty
// one whose parameter `triton_final_response` is true (Triton's decoupled convention). Inference
// goes through the InferenceRouter to the workers' Serve streams. docs/api.md has the mapping.
//
// Implemented: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata, ModelConfig,
// ModelInfer, ModelStreamInfer, RepositoryIndex, RepositoryModelLoad, RepositoryModelUnload. The
// rest (statistics, shared memory, trace and log settings) answer UNIMPLEMENTED.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "grpc_service.grpc.pb.h"
#include "inference_router.h"
#include "mambaquant/v1/worker.pb.h"
#include "service_deps.h"

namespace mq::server {

// The outputs a request asked for, in the order asked (both unset: output_ids only).
struct KServeOutputs {
  bool output_ids = true;
  bool logits = false;
  std::vector<std::string> order;  // "output_ids" / "logits"
};

// A ModelInferRequest checked and translated: the resolved model and the router call.
struct KServeInferCall {
  std::string model_name;     // as resolved in the registry
  int64_t model_version = 0;  // the resolved version
  std::string id;             // the request's id, echoed
  KServeOutputs outputs;
  mambaquant::v1::InferenceCall call;
};

// Translates a request without the registry: checks the input tensor (INT64 [1, n], n >= 1, data in
// int64_contents or raw_input_contents[0], values in 0..2^31-1), the requested outputs and the
// parameters, and fills `call.generate` (prompt_tokens, sampling, limits). `call.model` is left to
// the caller. INVALID_ARGUMENT says what was expected. Exposed for tests.
absl::StatusOr<KServeInferCall> TranslateInferRequest(const inference::ModelInferRequest& req);

// "name" + KServe version string ("" = latest) → the registry reference "name[:version]".
absl::StatusOr<std::string> KServeModelRef(const std::string& name, const std::string& version);

class KServeServiceImpl final : public inference::GRPCInferenceService::CallbackService {
 public:
  explicit KServeServiceImpl(ServiceDeps deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* ServerLive(grpc::CallbackServerContext* ctx, const inference::ServerLiveRequest* req,
                                       inference::ServerLiveResponse* resp) override;
  grpc::ServerUnaryReactor* ServerReady(grpc::CallbackServerContext* ctx, const inference::ServerReadyRequest* req,
                                        inference::ServerReadyResponse* resp) override;
  grpc::ServerUnaryReactor* ModelReady(grpc::CallbackServerContext* ctx, const inference::ModelReadyRequest* req,
                                       inference::ModelReadyResponse* resp) override;
  grpc::ServerUnaryReactor* ServerMetadata(grpc::CallbackServerContext* ctx, const inference::ServerMetadataRequest* req,
                                           inference::ServerMetadataResponse* resp) override;
  grpc::ServerUnaryReactor* ModelMetadata(grpc::CallbackServerContext* ctx, const inference::ModelMetadataRequest* req,
                                          inference::ModelMetadataResponse* resp) override;
  grpc::ServerUnaryReactor* ModelConfig(grpc::CallbackServerContext* ctx, const inference::ModelConfigRequest* req,
                                        inference::ModelConfigResponse* resp) override;
  grpc::ServerUnaryReactor* ModelInfer(grpc::CallbackServerContext* ctx, const inference::ModelInferRequest* req,
                                       inference::ModelInferResponse* resp) override;
  grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>* ModelStreamInfer(
      grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* RepositoryIndex(grpc::CallbackServerContext* ctx, const inference::RepositoryIndexRequest* req,
                                            inference::RepositoryIndexResponse* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelLoad(grpc::CallbackServerContext* ctx,
                                                const inference::RepositoryModelLoadRequest* req,
                                                inference::RepositoryModelLoadResponse* resp) override;
  grpc::ServerUnaryReactor* RepositoryModelUnload(grpc::CallbackServerContext* ctx,
                                                  const inference::RepositoryModelUnloadRequest* req,
                                                  inference::RepositoryModelUnloadResponse* resp) override;

  // Checks and resolves a request against the registry: the model must exist (NOT_FOUND), and the
  // router call gets the resolved "name:version" so the version echoed is the one that ran.
  absl::StatusOr<KServeInferCall> PrepareInfer(const inference::ModelInferRequest& req);

 private:
  ServiceDeps deps_;
};

}  // namespace mq::server
