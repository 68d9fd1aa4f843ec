// The Open Inference Protocol (KServe v2) API of mq-server, used as a Triton client would: the
// generated inference::GRPCInferenceService stub from Triton's grpc_service.proto against
// mq-server and a CPU mq-worker started as processes, with the bundled mamba-tiny model. Greedy
// output must equal `mq-engine generate` on the same prompt.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "cluster.h"
#include "grpc_service.grpc.pb.h"

namespace mq::test {
namespace {

using inference::GRPCInferenceService;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;

constexpr char kModel[] = "mamba-tiny";
constexpr char kPrompt[] = "The meaning of life is";
constexpr int kMaxNewTokens = 8;
constexpr int32_t kEos = 0;  // models/mamba-tiny/config.json
constexpr int32_t kPad = 1;

std::unique_ptr<GRPCInferenceService::Stub> MakeStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  return GRPCInferenceService::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

void SetDeadline(grpc::ClientContext* ctx, int seconds = 120) {
  ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(seconds));
}

bool WaitFor(const std::function<bool()>& pred, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (pred()) return true;
    absl::SleepFor(absl::Milliseconds(100));
  }
  return pred();
}

bool ServerReady(GRPCInferenceService::Stub& stub) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 5);
  inference::ServerReadyResponse resp;
  return stub.ServerReady(&ctx, inference::ServerReadyRequest(), &resp).ok() && resp.ready();
}

bool ModelReady(GRPCInferenceService::Stub& stub, const std::string& name, const std::string& version = "") {
  grpc::ClientContext ctx;
  SetDeadline(&ctx, 5);
  inference::ModelReadyRequest req;
  req.set_name(name);
  req.set_version(version);
  inference::ModelReadyResponse resp;
  grpc::Status s = stub.ModelReady(&ctx, req, &resp);
  EXPECT_TRUE(s.ok()) << s.error_message();
  return s.ok() && resp.ready();
}

struct EngineGeneration {
  std::vector<int64_t> prompt_ids;
  std::vector<int32_t> ids;
};

// `mq-engine generate` (greedy) on the bundled model.
EngineGeneration EngineGenerate(const std::string& prompt, int max_tokens) {
  std::string out;
  EXPECT_EQ(RunCommand({MQ_ENGINE_BIN, "generate", "--model", SourceDir() + "/models/mamba-tiny", "--prompt", prompt,
                        "--max-tokens", absl::StrCat(max_tokens), "--json"},
                       &out),
            0)
      << out;
  EngineGeneration g;
  auto j = nlohmann::json::parse(out);
  g.prompt_ids = j["prompt_ids"].get<std::vector<int64_t>>();
  g.ids = j["ids"].get<std::vector<int32_t>>();
  return g;
}

std::string Int64Le(const std::vector<int64_t>& values) {
  std::string raw(values.size() * 8, '\0');
  for (size_t i = 0; i < values.size(); ++i) {
    const uint64_t v = static_cast<uint64_t>(values[i]);
    for (int b = 0; b < 8; ++b) raw[i * 8 + static_cast<size_t>(b)] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return raw;
}

std::vector<int32_t> DecodeInt64Le(const std::string& raw) {
  EXPECT_EQ(raw.size() % 8, 0u);
  std::vector<int32_t> out;
  for (size_t i = 0; i + 8 <= raw.size(); i += 8) {
    uint64_t v = 0;
    for (int b = 7; b >= 0; --b) v = (v << 8) | static_cast<unsigned char>(raw[i + static_cast<size_t>(b)]);
    out.push_back(static_cast<int32_t>(static_cast<int64_t>(v)));
  }
  return out;
}

std::vector<float> DecodeFloatLe(const std::string& raw) {
  EXPECT_EQ(raw.size() % 4, 0u);
  std::vector<float> out(raw.size() / 4);
  for (size_t i = 0; i < out.size(); ++i) {
    uint32_t v = 0;
    for (int b = 3; b >= 0; --b) v = (v << 8) | static_cast<unsigned char>(raw[i * 4 + static_cast<size_t>(b)]);
    std::memcpy(&out[i], &v, 4);
  }
  return out;
}

// The engine prints the continuation without a trailing eos/padding; the server returns what was
// generated, which may end with the eos token.
std::vector<int32_t> WithoutTrailingEos(std::vector<int32_t> ids) {
  while (!ids.empty() && (ids.back() == kEos || ids.back() == kPad)) ids.pop_back();
  return ids;
}

ModelInferRequest MakeRequest(const std::vector<int64_t>& prompt_ids, bool raw, const std::string& id = "") {
  ModelInferRequest req;
  req.set_model_name(kModel);
  req.set_id(id);
  auto* in = req.add_inputs();
  in->set_name("input_ids");
  in->set_datatype("INT64");
  in->add_shape(1);
  in->add_shape(static_cast<int64_t>(prompt_ids.size()));
  if (raw) {
    req.add_raw_input_contents(Int64Le(prompt_ids));
  } else {
    for (int64_t v : prompt_ids) in->mutable_contents()->add_int64_contents(v);
  }
  (*req.mutable_parameters())["max_new_tokens"].set_int64_param(kMaxNewTokens);
  return req;
}

// The raw bytes of output `name`, or nullptr.
const std::string* RawOutput(const ModelInferResponse& resp, const std::string& name,
                             const inference::ModelInferResponse::InferOutputTensor** tensor = nullptr) {
  for (int i = 0; i < resp.outputs_size(); ++i) {
    if (resp.outputs(i).name() != name) continue;
    if (tensor != nullptr) *tensor = &resp.outputs(i);
    if (i >= resp.raw_output_contents_size()) return nullptr;
    return &resp.raw_output_contents(i);
  }
  return nullptr;
}

grpc::Status Infer(GRPCInferenceService::Stub& stub, const ModelInferRequest& req, ModelInferResponse* resp) {
  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  return stub.ModelInfer(&ctx, req, resp);
}

std::vector<int32_t> OutputIds(const ModelInferResponse& resp) {
  const inference::ModelInferResponse::InferOutputTensor* t = nullptr;
  const std::string* raw = RawOutput(resp, "output_ids", &t);
  EXPECT_NE(raw, nullptr);
  if (raw == nullptr) return {};
  EXPECT_EQ(t->datatype(), "INT64");
  std::vector<int32_t> ids = DecodeInt64Le(*raw);
  EXPECT_EQ(t->shape_size(), 2);
  if (t->shape_size() == 2) {
    EXPECT_EQ(t->shape(0), 1);
    EXPECT_EQ(t->shape(1), static_cast<int64_t>(ids.size()));
  }
  return ids;
}

bool FinalFlag(const ModelInferResponse& resp) {
  auto it = resp.parameters().find("triton_final_response");
  return it != resp.parameters().end() && it->second.bool_param();
}

// One server and one CPU worker for the suite, with the bundled model uploaded.
class KServeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster();
    cluster_->StartServer();
    cluster_->UploadBundled();
    cluster_->StartWorker();
    stub_ = MakeStub(cluster_->address()).release();
    ASSERT_TRUE(WaitFor([] { return ServerReady(*stub_); }, absl::Seconds(60)))
        << "the worker did not connect for inference\n" << cluster_->WorkerLog(0);
    engine_ = new EngineGeneration(EngineGenerate(kPrompt, kMaxNewTokens));
  }
  static void TearDownTestSuite() {
    delete stub_;
    delete cluster_;
    delete engine_;
    stub_ = nullptr;
    cluster_ = nullptr;
    engine_ = nullptr;
  }
  void TearDown() override {
    if (HasFailure() && cluster_ != nullptr) {
      std::fprintf(stderr, "---- server log ----\n%s\n---- worker log ----\n%s\n", cluster_->ServerLog().c_str(),
                   cluster_->WorkerLog(0).c_str());
    }
  }

  static Cluster* cluster_;
  static GRPCInferenceService::Stub* stub_;
  static EngineGeneration* engine_;
};

Cluster* KServeTest::cluster_ = nullptr;
GRPCInferenceService::Stub* KServeTest::stub_ = nullptr;
EngineGeneration* KServeTest::engine_ = nullptr;

TEST(KServeHealth, LiveAtOnceReadyOnceAWorkerConnects) {
  Cluster c;
  c.StartServer();
  auto stub = MakeStub(c.address());
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 5);
    inference::ServerLiveResponse resp;
    ASSERT_TRUE(stub->ServerLive(&ctx, inference::ServerLiveRequest(), &resp).ok());
    EXPECT_TRUE(resp.live());
  }
  EXPECT_FALSE(ServerReady(*stub)) << "no worker yet";
  c.StartWorker();
  EXPECT_TRUE(WaitFor([&] { return ServerReady(*stub); }, absl::Seconds(60))) << c.WorkerLog(0);
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 5);
    inference::ServerMetadataResponse resp;
    ASSERT_TRUE(stub->ServerMetadata(&ctx, inference::ServerMetadataRequest(), &resp).ok());
    EXPECT_EQ(resp.name(), "mambaquant-serve");
    EXPECT_FALSE(resp.version().empty());
    EXPECT_NE(std::find(resp.extensions().begin(), resp.extensions().end(), "model_repository"),
              resp.extensions().end());
  }
}

TEST_F(KServeTest, ModelMetadataDescribesTensorsAndUnknownModelIsNotFound) {
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    inference::ModelMetadataRequest req;
    req.set_name(kModel);
    inference::ModelMetadataResponse resp;
    grpc::Status s = stub_->ModelMetadata(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.name(), kModel);
    ASSERT_EQ(resp.versions_size(), 1);
    EXPECT_EQ(resp.versions(0), "1");
    ASSERT_EQ(resp.inputs_size(), 1);
    EXPECT_EQ(resp.inputs(0).name(), "input_ids");
    EXPECT_EQ(resp.inputs(0).datatype(), "INT64");
    EXPECT_EQ(std::vector<int64_t>(resp.inputs(0).shape().begin(), resp.inputs(0).shape().end()),
              (std::vector<int64_t>{1, -1}));
    ASSERT_EQ(resp.outputs_size(), 2);
    EXPECT_EQ(resp.outputs(0).name(), "output_ids");
    EXPECT_EQ(resp.outputs(0).datatype(), "INT64");
    EXPECT_EQ(std::vector<int64_t>(resp.outputs(0).shape().begin(), resp.outputs(0).shape().end()),
              (std::vector<int64_t>{1, -1}));
    EXPECT_EQ(resp.outputs(1).name(), "logits");
    EXPECT_EQ(resp.outputs(1).datatype(), "FP32");
    EXPECT_EQ(std::vector<int64_t>(resp.outputs(1).shape().begin(), resp.outputs(1).shape().end()),
              (std::vector<int64_t>{1, 4096}));  // vocab_size of mamba-tiny
  }
  for (auto [name, version] : {std::pair<std::string, std::string>{"no-such-model", ""}, {kModel, "7"}}) {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    inference::ModelMetadataRequest req;
    req.set_name(name);
    req.set_version(version);
    inference::ModelMetadataResponse resp;
    EXPECT_EQ(stub_->ModelMetadata(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND) << name << ":" << version;
  }
  EXPECT_FALSE(ModelReady(*stub_, "no-such-model"));
}

TEST_F(KServeTest, GreedyModelInferEqualsEngineWithRawAndTypedContents) {
  ASSERT_FALSE(engine_->prompt_ids.empty());
  ASSERT_FALSE(engine_->ids.empty());
  std::vector<int32_t> first;
  for (bool raw : {true, false}) {
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, MakeRequest(engine_->prompt_ids, raw, raw ? "req-raw" : "req-typed"), &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(resp.model_name(), kModel);
    EXPECT_EQ(resp.model_version(), "1");
    EXPECT_EQ(resp.id(), raw ? "req-raw" : "req-typed");
    ASSERT_EQ(resp.outputs_size(), 1) << "only output_ids unless outputs are named";
    ASSERT_EQ(resp.raw_output_contents_size(), 1);
    std::vector<int32_t> ids = OutputIds(resp);
    EXPECT_LE(ids.size(), static_cast<size_t>(kMaxNewTokens));
    EXPECT_EQ(WithoutTrailingEos(ids), engine_->ids) << (raw ? "raw" : "int64_contents");
    if (raw) first = ids;
    else EXPECT_EQ(ids, first);
  }
  EXPECT_TRUE(ModelReady(*stub_, kModel)) << "a worker loaded it to answer";
  EXPECT_TRUE(ModelReady(*stub_, kModel, "1"));
}

TEST_F(KServeTest, WrongDatatypeShapeOrDataIsInvalidArgument) {
  const std::vector<int64_t> ids = engine_->prompt_ids;
  const int64_t n = static_cast<int64_t>(ids.size());
  std::vector<std::pair<std::string, ModelInferRequest>> cases;
  {
    ModelInferRequest r = MakeRequest(ids, true);
    r.mutable_inputs(0)->set_datatype("INT32");
    cases.emplace_back("datatype INT32", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    r.mutable_inputs(0)->clear_shape();
    r.mutable_inputs(0)->add_shape(n);
    cases.emplace_back("shape [n]", r);
  }
  {
    std::vector<int64_t> two = ids;
    two.insert(two.end(), ids.begin(), ids.end());
    ModelInferRequest r = MakeRequest(two, false);
    r.mutable_inputs(0)->set_shape(0, 2);
    r.mutable_inputs(0)->set_shape(1, n);
    cases.emplace_back("batch 2", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    r.mutable_raw_input_contents(0)->pop_back();
    cases.emplace_back("raw bytes not 8 x n", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, false);
    r.mutable_inputs(0)->mutable_contents()->add_int64_contents(5);
    cases.emplace_back("more values than the shape", r);
  }
  {
    ModelInferRequest r = MakeRequest({5, -1}, false);
    cases.emplace_back("negative id", r);
  }
  {
    ModelInferRequest r = MakeRequest({5, int64_t{1} << 40}, true);
    cases.emplace_back("id beyond int32", r);
  }
  {
    ModelInferRequest r = MakeRequest({5, 4096}, true);  // the vocabulary is 0..4095
    cases.emplace_back("id beyond the vocabulary", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    r.mutable_inputs(0)->set_name("text");
    cases.emplace_back("unknown input", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    r.add_outputs()->set_name("hidden_states");
    cases.emplace_back("unknown output", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())["max_tokens"].set_int64_param(4);
    cases.emplace_back("unknown parameter", r);
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())["temperature"].set_string_param("hot");
    cases.emplace_back("parameter of the wrong type", r);
  }
  for (const auto& [what, req] : cases) {
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what << ": " << s.error_message();
    EXPECT_FALSE(s.error_message().empty()) << what;
  }
  // max_new_tokens: below 1 says so (not "1..2147483647"); above the worker's limit names it.
  for (const auto& [n, want] : std::vector<std::pair<int64_t, std::string>>{
           {0, "max_new_tokens = 0 must be at least 1"}, {5000, "max_new_tokens must be in [1, 4096], got 5000"}}) {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())["max_new_tokens"].set_int64_param(n);
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, r, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << n;
    EXPECT_NE(s.error_message().find(want), std::string::npos) << n << ": " << s.error_message();
  }
  // A double beyond a float is named as sent (it was reported as "got inf", after the conversion).
  {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())["temperature"].set_double_param(1e300);
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, r, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("temperature = 1e+300 is out of range"), std::string::npos) << s.error_message();
  }
  // Nor may a nonzero double round to 0 (top_p 1e-300 became "off"; -1e-300 became -0 and passed
  // the sign checks); a tiny value a float holds (a subnormal) still passes.
  for (const auto& [name, v] : std::vector<std::pair<std::string, double>>{
           {"top_p", 1e-300}, {"repetition_penalty", 1e-300}, {"repetition_penalty", -1e-300}, {"temperature", -1e-300}}) {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())[name].set_double_param(v);
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, r, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << name << " " << v;
    EXPECT_NE(s.error_message().find("rounds to 0"), std::string::npos) << s.error_message();
  }
  {
    ModelInferRequest r = MakeRequest(ids, true);
    (*r.mutable_parameters())["top_p"].set_double_param(1e-40);
    ModelInferResponse resp;
    grpc::Status s = Infer(*stub_, r, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
  }
  ModelInferRequest unknown = MakeRequest(ids, true);
  unknown.set_model_name("no-such-model");
  ModelInferResponse resp;
  EXPECT_EQ(Infer(*stub_, unknown, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  // The model is looked up before its inputs: an unknown model or version with inputs a text model
  // would refuse (an image tensor) is still NOT_FOUND.
  for (const auto& [name, version] : std::vector<std::pair<std::string, std::string>>{{"no-such-model", ""}, {"mamba-tiny", "7"}}) {
    ModelInferRequest r = MakeRequest(ids, true);
    r.set_model_name(name);
    r.set_model_version(version);
    r.mutable_inputs(0)->set_name("pixel_values");
    r.mutable_inputs(0)->set_datatype("FP32");
    grpc::Status st = Infer(*stub_, r, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::NOT_FOUND) << name << ":" << version << " " << st.error_message();
  }
}

TEST_F(KServeTest, LogitsOutputHasVocabFloatsAndItsArgmaxIsTheFirstToken) {
  ModelInferRequest req = MakeRequest(engine_->prompt_ids, true, "with-logits");
  req.add_outputs()->set_name("output_ids");
  req.add_outputs()->set_name("logits");
  ModelInferResponse resp;
  grpc::Status s = Infer(*stub_, req, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(resp.outputs_size(), 2);
  ASSERT_EQ(resp.raw_output_contents_size(), 2);
  std::vector<int32_t> ids = OutputIds(resp);
  ASSERT_FALSE(ids.empty());
  const inference::ModelInferResponse::InferOutputTensor* t = nullptr;
  const std::string* raw = RawOutput(resp, "logits", &t);
  ASSERT_NE(raw, nullptr);
  EXPECT_EQ(t->datatype(), "FP32");
  ASSERT_EQ(t->shape_size(), 2);
  EXPECT_EQ(t->shape(0), 1);
  EXPECT_EQ(t->shape(1), 4096);
  std::vector<float> logits = DecodeFloatLe(*raw);
  ASSERT_EQ(logits.size(), 4096u);
  const auto argmax = std::max_element(logits.begin(), logits.end()) - logits.begin();
  EXPECT_EQ(argmax, ids[0]);

  // Only the named outputs come back.
  ModelInferRequest only = MakeRequest(engine_->prompt_ids, true);
  only.add_outputs()->set_name("logits");
  ModelInferResponse only_resp;
  s = Infer(*stub_, only, &only_resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(only_resp.outputs_size(), 1);
  EXPECT_EQ(only_resp.outputs(0).name(), "logits");
}

TEST_F(KServeTest, StreamInferSendsOneResponsePerTokenThenAFinalOne) {
  ModelInferResponse unary;
  grpc::Status us = Infer(*stub_, MakeRequest(engine_->prompt_ids, true), &unary);
  ASSERT_TRUE(us.ok()) << us.error_message();
  const std::vector<int32_t> expected = OutputIds(unary);
  ASSERT_FALSE(expected.empty());

  grpc::ClientContext ctx;
  SetDeadline(&ctx);
  auto stream = stub_->ModelStreamInfer(&ctx);
  // Two requests in flight on one stream, and a bad one between them that must not end it.
  ASSERT_TRUE(stream->Write(MakeRequest(engine_->prompt_ids, true, "a")));
  ModelInferRequest bad = MakeRequest(engine_->prompt_ids, true, "bad");
  bad.mutable_inputs(0)->set_datatype("FP32");
  ASSERT_TRUE(stream->Write(bad));
  ASSERT_TRUE(stream->Write(MakeRequest(engine_->prompt_ids, false, "b")));
  ASSERT_TRUE(stream->WritesDone());

  std::map<std::string, std::vector<int32_t>> tokens;
  std::map<std::string, int> finals;
  std::map<std::string, std::string> errors;
  ModelStreamInferResponse r;
  while (stream->Read(&r)) {
    const ModelInferResponse& ir = r.infer_response();
    const std::string& id = ir.id();
    EXPECT_EQ(finals[id], 0) << "a response for " << id << " after its final one";
    if (!r.error_message().empty()) {
      errors[id] = r.error_message();
      EXPECT_TRUE(FinalFlag(ir));
      ++finals[id];
      continue;
    }
    EXPECT_EQ(ir.model_name(), kModel);
    EXPECT_EQ(ir.model_version(), "1");
    if (FinalFlag(ir)) {
      EXPECT_EQ(ir.outputs_size(), 0) << "the final response is empty";
      ++finals[id];
      continue;
    }
    std::vector<int32_t> one = OutputIds(ir);
    ASSERT_EQ(one.size(), 1u) << "one token per response";
    tokens[id].push_back(one[0]);
  }
  grpc::Status s = stream->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(tokens["a"], expected);
  EXPECT_EQ(tokens["b"], expected);
  EXPECT_EQ(finals["a"], 1);
  EXPECT_EQ(finals["b"], 1);
  EXPECT_EQ(finals["bad"], 1);
  EXPECT_NE(errors["bad"].find("INVALID_ARGUMENT"), std::string::npos) << errors["bad"];
  EXPECT_TRUE(tokens["bad"].empty());
}

TEST_F(KServeTest, CancelledCallsEndAndTheServerKeepsServing) {
  ModelInferRequest long_req = MakeRequest(engine_->prompt_ids, true, "long");
  (*long_req.mutable_parameters())["max_new_tokens"].set_int64_param(4096);
  (*long_req.mutable_parameters())["ignore_eos"].set_bool_param(true);
  {
    // ModelInfer whose deadline passes mid-generation.
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(20));
    ModelInferResponse resp;
    grpc::Status s = stub_->ModelInfer(&ctx, long_req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << s.error_message();
  }
  {
    // A stream cancelled after its first token, with the call still generating.
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto stream = stub_->ModelStreamInfer(&ctx);
    ASSERT_TRUE(stream->Write(long_req));
    ModelStreamInferResponse r;
    ASSERT_TRUE(stream->Read(&r));
    EXPECT_TRUE(r.error_message().empty()) << r.error_message();
    ctx.TryCancel();
    while (stream->Read(&r)) {
    }
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::CANCELLED);
  }
  {
    // A stream half-closed at once: the server answers the request, then ends the stream OK.
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    auto stream = stub_->ModelStreamInfer(&ctx);
    ASSERT_TRUE(stream->Write(MakeRequest(engine_->prompt_ids, true, "after")));
    ASSERT_TRUE(stream->WritesDone());
    std::vector<int32_t> ids;
    int finals = 0;
    ModelStreamInferResponse r;
    while (stream->Read(&r)) {
      ASSERT_TRUE(r.error_message().empty()) << r.error_message();
      if (FinalFlag(r.infer_response())) ++finals;
      else ids.push_back(OutputIds(r.infer_response()).at(0));
    }
    EXPECT_TRUE(stream->Finish().ok());
    EXPECT_EQ(finals, 1);
    EXPECT_EQ(WithoutTrailingEos(ids), engine_->ids);
  }
  // The worker still serves ordinary calls.
  ModelInferResponse resp;
  grpc::Status s = Infer(*stub_, MakeRequest(engine_->prompt_ids, false), &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(WithoutTrailingEos(OutputIds(resp)), engine_->ids);
}

TEST_F(KServeTest, RepositoryIndexLoadAndUnload) {
  auto index = [&]() {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    inference::RepositoryIndexResponse resp;
    grpc::Status s = stub_->RepositoryIndex(&ctx, inference::RepositoryIndexRequest(), &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  };
  auto state_of = [&](const std::string& name) {
    const inference::RepositoryIndexResponse resp = index();
    for (const auto& m : resp.models()) {
      if (m.name() == name) return m.state();
    }
    return std::string("<absent>");
  };
  inference::RepositoryIndexResponse all = index();
  bool listed = false;
  for (const auto& m : all.models()) listed = listed || (m.name() == kModel && m.version() == "1");
  EXPECT_TRUE(listed) << all.DebugString();

  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    inference::RepositoryModelLoadRequest req;
    req.set_model_name(kModel);
    inference::RepositoryModelLoadResponse resp;
    grpc::Status s = stub_->RepositoryModelLoad(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(WaitFor([&] { return ModelReady(*stub_, kModel); }, absl::Seconds(10)));
  EXPECT_EQ(state_of(kModel), "READY");
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx);
    inference::RepositoryModelUnloadRequest req;
    req.set_model_name(kModel);
    inference::RepositoryModelUnloadResponse resp;
    grpc::Status s = stub_->RepositoryModelUnload(&ctx, req, &resp);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_TRUE(WaitFor([&] { return !ModelReady(*stub_, kModel); }, absl::Seconds(10)));
  EXPECT_NE(state_of(kModel), "READY");
  {
    grpc::ClientContext ctx;
    SetDeadline(&ctx, 10);
    inference::RepositoryModelLoadRequest req;
    req.set_model_name("no-such-model");
    inference::RepositoryModelLoadResponse resp;
    EXPECT_EQ(stub_->RepositoryModelLoad(&ctx, req, &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  }
}

// A worker unloads models to make room for others: an unload must give the memory back. Twenty
// load/unload cycles through the repository API leave the worker's RSS where five left it.
TEST_F(KServeTest, LoadUnloadTwentyTimesReturnsWorkerMemory) {
  auto cycle = [&] {
    {
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      inference::RepositoryModelLoadRequest req;
      req.set_model_name(kModel);
      inference::RepositoryModelLoadResponse resp;
      ASSERT_TRUE(stub_->RepositoryModelLoad(&ctx, req, &resp).ok());
    }
    ASSERT_TRUE(WaitFor([&] { return ModelReady(*stub_, kModel); }, absl::Seconds(10)));
    {
      grpc::ClientContext ctx;
      SetDeadline(&ctx);
      inference::RepositoryModelUnloadRequest req;
      req.set_model_name(kModel);
      inference::RepositoryModelUnloadResponse resp;
      ASSERT_TRUE(stub_->RepositoryModelUnload(&ctx, req, &resp).ok());
    }
    ASSERT_TRUE(WaitFor([&] { return !ModelReady(*stub_, kModel); }, absl::Seconds(10)));
  };
  // Warm-up cycles first: the allocator's arenas and gRPC's buffers settle.
  for (int i = 0; i < 5; ++i) cycle();
  const pid_t worker = cluster_->worker(0).pid();
  const int64_t baseline_kb = ProcStatusKb(worker, "VmRSS");
  for (int i = 0; i < 20; ++i) cycle();
  const int64_t after_kb = ProcStatusKb(worker, "VmRSS");
  std::printf("worker RSS after 5 load/unload cycles %lld KiB, after 25: %lld KiB\n", static_cast<long long>(baseline_kb),
              static_cast<long long>(after_kb));
  // The bundled model holds about 6 MB loaded: twenty leaked copies would be 120 MB, a fifth of
  // it leaked each time 24 MB. What stays below is allocator noise on a busy machine.
  EXPECT_LT(after_kb - baseline_kb, 24 * 1024);
}

}  // namespace
}  // namespace mq::test
