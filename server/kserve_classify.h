// The KServe v2 (Open Inference Protocol) view of a Vision Mamba model (model_type "vim"):
// input `pixel_values` FP32 [B, C, H, W] (normalized images, in raw_input_contents[0] or
// contents.fp32_contents), output `logits` FP32 [B, num_classes]. A ModelInfer of such a model
// becomes one Classify call through the InferenceRouter, under the limits of
// common/classify_request.h. kserve_service.cc dispatches here by the model's model_type.
#pragma once

#include <string>

#include <grpcpp/support/server_callback.h>

#include "absl/status/statusor.h"
#include "grpc_service.pb.h"
#include "inference_router.h"
#include "mambaquant/v1/inference.pb.h"
#include "mambaquant/v1/registry.pb.h"
#include "vim_artifact_check.h"

namespace mq::server {

class Registry;

inline constexpr char kPixelValues[] = "pixel_values";

// Checks and translates a ModelInferRequest for a Vim model into a ClassifyRequest (model left
// unset). INVALID_ARGUMENT says what was expected. Exposed for tests.
absl::StatusOr<mambaquant::v1::ClassifyRequest> TranslateClassifyInfer(const inference::ModelInferRequest& req);

// Starts the call for `model` (the resolved registry artifact); the reactor answers once.
grpc::ServerUnaryReactor* StartClassifyInfer(InferenceRouter* router, const mambaquant::v1::Artifact& model,
                                             const inference::ModelInferRequest& req,
                                             inference::ModelInferResponse* resp);

// ModelMetadata and ModelConfig of a Vim model, from its config.json in the registry.
absl::Status FillVimModelMetadata(Registry* registry, const mambaquant::v1::Artifact& model,
                                  inference::ModelMetadataResponse* resp);
absl::Status FillVimModelConfig(Registry* registry, const mambaquant::v1::Artifact& model, inference::ModelConfig* config);

}  // namespace mq::server
