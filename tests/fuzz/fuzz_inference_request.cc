// The server's request validators (common/inference_request): a GenerateRequest or ScoreRequest
// decoded from arbitrary bytes is converted and checked without crashing; an accepted
// GenerateRequest gives parameters the engine's contract accepts.
#include <cstdint>

#include "fuzz_check.h"
#include "inference_request.h"
#include "mambaquant/v1/inference.pb.h"
#include <google/protobuf/stubs/logging.h>

namespace {
// Invalid UTF-8 in a string field is an expected parse failure here, logged by protobuf once per
// input: without this the 30-minute run wrote 740 MB of those lines.
const bool kQuietProtobuf = (google::protobuf::SetLogHandler(nullptr), true);
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const bool score = data[0] & 1;
  if (score) {
    mambaquant::v1::ScoreRequest request;
    if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
    (void)mq::CheckScoreRequest(request);
    return 0;
  }
  mambaquant::v1::GenerateRequest request;
  if (!request.ParseFromArray(data + 1, static_cast<int>(size - 1))) return 0;
  (void)mq::CheckGeneratePrompt(request);
  auto params = mq::GenerationParamsFromProto(request);
  if (params.ok()) MQ_FUZZ_CHECK(mq::serve::ValidateGenerationParams(params->params).ok());
  return 0;
}
