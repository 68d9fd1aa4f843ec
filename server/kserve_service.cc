#include "kserve_service.h"

#include <algorithm>
#include <atomic>
#include <climits>
#include <cmath>
#include <deque>
#include <limits>
#include <memory>
#include <set>
#include <utility>

#include <nlohmann/json.hpp>

#include "absl/base/thread_annotations.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "log.h"
#include "model/mamba_config.h"
#include "kserve_classify.h"
#include "name_validation.h"
#include "registry.h"

#ifndef MQ_SERVER_VERSION
#define MQ_SERVER_VERSION "0.1.0"
#endif

namespace mq::server {

using inference::InferParameter;
using inference::ModelInferRequest;
using inference::ModelInferResponse;
using inference::ModelStreamInferResponse;
using mambaquant::v1::ARTIFACT_KIND_MODEL;
using mambaquant::v1::Artifact;
using mambaquant::v1::InferenceCall;
using mambaquant::v1::InferenceEvent;

namespace {

constexpr char kInputIds[] = "input_ids";
constexpr char kOutputIds[] = "output_ids";
constexpr char kLogits[] = "logits";
constexpr char kFinalFlag[] = "triton_final_response";
constexpr char kKnownParameters[] =
    "max_new_tokens, min_tokens, temperature, top_k, top_p, min_p, repetition_penalty, presence_penalty, "
    "frequency_penalty, seed, ignore_eos, stop, stop_token_ids";

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

std::string ShapeString(const google::protobuf::RepeatedField<int64_t>& shape) {
  return absl::StrCat("[", absl::StrJoin(shape, ", "), "]");
}

// --- Tensor bytes (little-endian, as Triton's raw contents). ---

std::string Int64Bytes(const std::vector<int32_t>& ids) {
  std::string out(ids.size() * 8, '\0');
  for (size_t i = 0; i < ids.size(); ++i) {
    const uint64_t v = static_cast<uint64_t>(static_cast<int64_t>(ids[i]));
    for (int b = 0; b < 8; ++b) out[i * 8 + static_cast<size_t>(b)] = static_cast<char>((v >> (8 * b)) & 0xff);
  }
  return out;
}

int64_t ReadInt64Le(const char* p) {
  uint64_t v = 0;
  for (int b = 7; b >= 0; --b) v = (v << 8) | static_cast<unsigned char>(p[b]);
  return static_cast<int64_t>(v);
}

void AddOutputIds(ModelInferResponse* resp, const std::vector<int32_t>& ids) {
  auto* out = resp->add_outputs();
  out->set_name(kOutputIds);
  out->set_datatype("INT64");
  out->add_shape(1);
  out->add_shape(static_cast<int64_t>(ids.size()));
  resp->add_raw_output_contents(Int64Bytes(ids));
}

void AddLogits(ModelInferResponse* resp, const std::string& float32_le) {
  auto* out = resp->add_outputs();
  out->set_name(kLogits);
  out->set_datatype("FP32");
  out->add_shape(1);
  out->add_shape(static_cast<int64_t>(float32_le.size() / 4));
  resp->add_raw_output_contents(float32_le);
}

// --- Request parameters. ---

const char* ParameterType(const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kBoolParam: return "bool";
    case InferParameter::kInt64Param: return "int64";
    case InferParameter::kStringParam: return "string";
    case InferParameter::kDoubleParam: return "double";
    case InferParameter::kUint64Param: return "uint64";
    default: return "unset";
  }
}

absl::StatusOr<int64_t> IntParameter(const std::string& name, const InferParameter& p, int64_t lo, int64_t hi) {
  int64_t v = 0;
  if (p.parameter_choice_case() == InferParameter::kInt64Param) {
    v = p.int64_param();
  } else if (p.parameter_choice_case() == InferParameter::kUint64Param) {
    if (p.uint64_param() > static_cast<uint64_t>(hi)) {
      return Invalid(absl::StrCat("parameter ", name, " = ", p.uint64_param(), " is out of range ", lo, "..", hi));
    }
    v = static_cast<int64_t>(p.uint64_param());
  } else {
    return Invalid(absl::StrCat("parameter ", name, " must be an integer (int64_param), got ", ParameterType(p)));
  }
  // Below the field's floor; the ceiling (the field's type) is rarely the real limit — the worker's
  // (max_new_tokens: at most 4096 and its --max-new-tokens) is checked after this and named there.
  if (v < lo) return Invalid(absl::StrCat("parameter ", name, " = ", v, " must be at least ", lo));
  if (v > hi) return Invalid(absl::StrCat("parameter ", name, " = ", v, " is out of range ", lo, "..", hi));
  return v;
}

absl::StatusOr<float> FloatParameter(const std::string& name, const InferParameter& p) {
  switch (p.parameter_choice_case()) {
    case InferParameter::kDoubleParam: {
      // Beyond a float, the conversion would report "inf" for a value the client never sent.
      const double d = p.double_param();
      if (std::isfinite(d) && std::fabs(d) > std::numeric_limits<float>::max())
        return Invalid(absl::StrCat("parameter ", name, " = ", d, " is out of range (beyond a 32-bit float)"));
      // Nor may a nonzero value round to zero: 0 means "off" for top_p and the penalties, and a
      // negative one would become -0 and pass the fields' sign checks.
      const float f = static_cast<float>(d);
      if (d != 0.0 && f == 0.0f)
        return Invalid(absl::StrCat("parameter ", name, " = ", d, " is out of range (rounds to 0 as a 32-bit float)"));
      return f;
    }
    case InferParameter::kInt64Param: return static_cast<float>(p.int64_param());
    case InferParameter::kUint64Param: return static_cast<float>(p.uint64_param());
    default:
      return Invalid(absl::StrCat("parameter ", name, " must be a number (double_param), got ", ParameterType(p)));
  }
}

// Parameters Triton reserves or its clients set; they do not change generation here.
bool IgnoredParameter(const std::string& name) {
  return absl::StartsWith(name, "triton_") || name == "sequence_id" || name == "sequence_start" ||
         name == "sequence_end" || name == "priority" || name == "timeout" || name == "headers" ||
         name == "binary_data_output";
}

absl::Status ApplyParameter(const std::string& name, const InferParameter& p, mambaquant::v1::GenerateRequest* g) {
  auto* s = g->mutable_sampling();
  if (name == "max_new_tokens") {
    auto v = IntParameter(name, p, 1, INT32_MAX);
    if (!v.ok()) return v.status();
    g->set_max_new_tokens(static_cast<int32_t>(*v));
  } else if (name == "min_tokens") {
    auto v = IntParameter(name, p, 0, INT32_MAX);
    if (!v.ok()) return v.status();
    g->set_min_tokens(static_cast<int32_t>(*v));
  } else if (name == "top_k") {
    auto v = IntParameter(name, p, 0, INT32_MAX);
    if (!v.ok()) return v.status();
    s->set_top_k(static_cast<int32_t>(*v));
  } else if (name == "seed") {
    if (p.parameter_choice_case() == InferParameter::kUint64Param) {
      s->set_seed(p.uint64_param());
    } else {
      auto v = IntParameter(name, p, 0, INT64_MAX);
      if (!v.ok()) return v.status();
      s->set_seed(static_cast<uint64_t>(*v));
    }
  } else if (name == "temperature" || name == "top_p" || name == "min_p" || name == "repetition_penalty" ||
             name == "presence_penalty" || name == "frequency_penalty") {
    auto v = FloatParameter(name, p);
    if (!v.ok()) return v.status();
    if (name == "temperature") s->set_temperature(*v);
    else if (name == "top_p") s->set_top_p(*v);
    else if (name == "min_p") s->set_min_p(*v);
    else if (name == "repetition_penalty") s->set_repetition_penalty(*v);
    else if (name == "presence_penalty") s->set_presence_penalty(*v);
    else s->set_frequency_penalty(*v);
  } else if (name == "ignore_eos") {
    if (p.parameter_choice_case() != InferParameter::kBoolParam) {
      return Invalid(absl::StrCat("parameter ignore_eos must be a bool (bool_param), got ", ParameterType(p)));
    }
    g->set_ignore_eos(p.bool_param());
  } else if (name == "stop") {
    if (p.parameter_choice_case() != InferParameter::kStringParam) {
      return Invalid(absl::StrCat("parameter stop must be a string (string_param), got ", ParameterType(p)));
    }
    g->add_stop(p.string_param());
  } else if (name == "stop_token_ids") {
    // One id (int64) or a JSON array of ids in a string: "[50, 187]".
    if (p.parameter_choice_case() == InferParameter::kStringParam) {
      const nlohmann::json j = nlohmann::json::parse(p.string_param(), nullptr, /*allow_exceptions=*/false);
      if (!j.is_array()) return Invalid("parameter stop_token_ids must be an int64 or a JSON array of ids, e.g. \"[50, 187]\"");
      for (const auto& e : j) {
        if (!e.is_number_integer() || e.get<int64_t>() < 0 || e.get<int64_t>() > INT32_MAX) {
          return Invalid("parameter stop_token_ids: every id must be an integer in 0..2^31-1");
        }
        g->add_stop_token_ids(static_cast<int32_t>(e.get<int64_t>()));
      }
    } else {
      auto v = IntParameter(name, p, 0, INT32_MAX);
      if (!v.ok()) return v.status();
      g->add_stop_token_ids(static_cast<int32_t>(*v));
    }
  } else if (!IgnoredParameter(name)) {
    return Invalid(absl::StrCat("unknown parameter \"", name, "\"; the parameters are ", kKnownParameters));
  }
  return absl::OkStatus();
}

bool SharedMemoryParameter(const std::string& name) { return absl::StartsWith(name, "shared_memory_"); }

absl::Status ParseInputIds(const ModelInferRequest& req, std::vector<int32_t>* ids) {
  const std::string expected = "exactly one input, input_ids INT64 [1, n]";
  if (req.inputs_size() != 1) return Invalid(absl::StrCat("expected ", expected, ", got ", req.inputs_size(), " inputs"));
  const auto& in = req.inputs(0);
  if (in.name() != kInputIds) return Invalid(absl::StrCat("unknown input \"", in.name(), "\": expected ", expected));
  if (in.datatype() != "INT64") {
    return Invalid(absl::StrCat("input_ids must have datatype INT64, got \"", in.datatype(), "\""));
  }
  if (in.shape_size() != 2) {
    return Invalid(absl::StrCat("input_ids must have shape [1, n], got ", ShapeString(in.shape())));
  }
  if (in.shape(0) != 1) {
    return Invalid(absl::StrCat("input_ids has shape ", ShapeString(in.shape()),
                                ": the batch size must be 1 (shape [1, n]); send one request per prompt"));
  }
  const int64_t n = in.shape(1);
  if (n < 1) return Invalid(absl::StrCat("input_ids has shape ", ShapeString(in.shape()), ": n must be at least 1"));
  for (const auto& [key, value] : in.parameters()) {
    if (SharedMemoryParameter(key)) {
      return Invalid("shared memory inputs are not supported: send input_ids in the request");
    }
  }
  const auto& c = in.contents();
  const bool other_contents = c.bool_contents_size() > 0 || c.int_contents_size() > 0 || c.uint_contents_size() > 0 ||
                              c.uint64_contents_size() > 0 || c.fp32_contents_size() > 0 ||
                              c.fp64_contents_size() > 0 || c.bytes_contents_size() > 0;
  if (other_contents) return Invalid("input_ids (INT64) data must be in contents.int64_contents or raw_input_contents");
  ids->clear();
  if (req.raw_input_contents_size() > 0) {
    if (req.raw_input_contents_size() != 1) {
      return Invalid(absl::StrCat("raw_input_contents must have one entry per input (1), got ",
                                  req.raw_input_contents_size()));
    }
    if (c.int64_contents_size() > 0) return Invalid("input_ids has data both in contents and in raw_input_contents");
    const std::string& raw = req.raw_input_contents(0);
    if (raw.size() % 8 != 0 || static_cast<int64_t>(raw.size() / 8) != n) {
      return Invalid(absl::StrCat("raw_input_contents[0] has ", raw.size(), " bytes; input_ids INT64 ",
                                  ShapeString(in.shape()), " needs exactly 8 bytes per value (8 x ", n, ")"));
    }
    ids->reserve(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int64_t v = ReadInt64Le(raw.data() + 8 * i);
      if (v < 0 || v > INT32_MAX) return Invalid(absl::StrCat("input_ids[", i, "] = ", v, " is not a token id (0..2^31-1)"));
      ids->push_back(static_cast<int32_t>(v));
    }
    return absl::OkStatus();
  }
  if (c.int64_contents_size() == 0) {
    return Invalid(absl::StrCat("input_ids has no data: put ", n, " values in contents.int64_contents or 8 x ", n,
                                " little-endian bytes in raw_input_contents[0]"));
  }
  if (c.int64_contents_size() != n) {
    return Invalid(absl::StrCat("input_ids has shape ", ShapeString(in.shape()), " but contents.int64_contents holds ",
                                c.int64_contents_size(), " values"));
  }
  ids->reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t v = c.int64_contents(static_cast<int>(i));
    if (v < 0 || v > INT32_MAX) return Invalid(absl::StrCat("input_ids[", i, "] = ", v, " is not a token id (0..2^31-1)"));
    ids->push_back(static_cast<int32_t>(v));
  }
  return absl::OkStatus();
}

absl::StatusOr<KServeOutputs> ParseOutputs(const ModelInferRequest& req) {
  KServeOutputs outputs;
  if (req.outputs_size() == 0) {
    outputs.order = {kOutputIds};
    return outputs;
  }
  outputs.output_ids = false;
  for (const auto& o : req.outputs()) {
    if (o.name() != kOutputIds && o.name() != kLogits) {
      return Invalid(absl::StrCat("unknown output \"", o.name(), "\": the outputs are output_ids and logits"));
    }
    if (std::find(outputs.order.begin(), outputs.order.end(), o.name()) != outputs.order.end()) {
      return Invalid(absl::StrCat("output \"", o.name(), "\" is requested twice"));
    }
    for (const auto& [key, value] : o.parameters()) {
      if (SharedMemoryParameter(key)) return Invalid("shared memory outputs are not supported");
      if (key == "classification") return Invalid("the classification extension is not supported");
    }
    outputs.order.push_back(o.name());
    if (o.name() == kOutputIds) outputs.output_ids = true;
    else outputs.logits = true;
  }
  return outputs;
}

// The response parameters every (final) response carries.
void SetFinishParameters(google::protobuf::Map<std::string, InferParameter>* params, const std::string& finish_reason,
                         int32_t prompt_tokens, int32_t completion_tokens, std::optional<uint64_t> seed) {
  if (!finish_reason.empty()) (*params)["finish_reason"].set_string_param(finish_reason);
  if (prompt_tokens > 0) (*params)["prompt_tokens"].set_int64_param(prompt_tokens);
  (*params)["completion_tokens"].set_int64_param(completion_tokens);
  if (seed.has_value()) (*params)["seed"].set_uint64_param(*seed);
}

absl::StatusOr<int64_t> VocabSize(Registry* registry, const Artifact& model) {
  for (const auto& f : model.files()) {
    if (f.path() != "config.json") continue;
    auto config = mq::MambaConfig::FromFile(registry->blobs()->BlobPath(f.sha256()));
    if (!config.ok()) return absl::InternalError(config.status().message());
    return config->vocab_size;
  }
  return absl::NotFoundError("no config.json");
}

// All registry versions of a model name, ascending.
absl::StatusOr<std::vector<int64_t>> ModelVersions(Registry* registry, const std::string& name) {
  std::vector<int64_t> versions;
  std::string token;
  do {
    auto page = registry->List(ARTIFACT_KIND_MODEL, name, 1000, token);
    if (!page.ok()) return page.status();
    for (const auto& a : page->artifacts) versions.push_back(a.version());
    token = page->next_page_token;
  } while (!token.empty());
  std::sort(versions.begin(), versions.end());
  return versions;
}

void FillTensorMetadata(inference::ModelMetadataResponse::TensorMetadata* t, const char* name, const char* datatype,
                        std::initializer_list<int64_t> shape) {
  t->set_name(name);
  t->set_datatype(datatype);
  for (int64_t d : shape) t->add_shape(d);
}

// --- ModelInfer: one router call, answered when it is done. ---

class ModelInferReactor;

// The call's events as they arrive: the generated ids, the prompt logits, the summary fields.
struct GenerationResult {
  std::vector<int32_t> ids;
  std::string logits;  // float32 little-endian
  std::string finish_reason;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  std::optional<uint64_t> seed;  // set on the first generate event

  void Add(const InferenceEvent& event) {
    if (!event.prompt_logits().empty() && logits.empty()) logits = event.prompt_logits();
    if (!event.has_generate()) return;
    const auto& g = event.generate();
    if (!seed.has_value()) seed = g.seed();
    ids.insert(ids.end(), g.token_ids().begin(), g.token_ids().end());
    if (!g.finish_reason().empty()) finish_reason = g.finish_reason();
    if (g.prompt_tokens() > 0) prompt_tokens = g.prompt_tokens();
    if (g.completion_tokens() > 0) completion_tokens = g.completion_tokens();
  }
};

// Fills a ModelInferResponse from a finished generation. INTERNAL when logits were asked for and
// the worker sent none.
absl::Status FillInferResponse(const KServeInferCall& call, const GenerationResult& result, ModelInferResponse* resp) {
  resp->set_model_name(call.model_name);
  resp->set_model_version(absl::StrCat(call.model_version));
  resp->set_id(call.id);
  for (const std::string& name : call.outputs.order) {
    if (name == kOutputIds) {
      AddOutputIds(resp, result.ids);
    } else {
      if (result.logits.empty() || result.logits.size() % 4 != 0) {
        return absl::InternalError("the worker returned no prompt logits");
      }
      AddLogits(resp, result.logits);
    }
  }
  SetFinishParameters(resp->mutable_parameters(), result.finish_reason, result.prompt_tokens,
                      result.completion_tokens ? result.completion_tokens : static_cast<int32_t>(result.ids.size()),
                      result.seed);
  return absl::OkStatus();
}

class UnaryObserver : public InferenceCallObserver {
 public:
  explicit UnaryObserver(ModelInferReactor* reactor) : reactor_(reactor) {}
  void OnEvent(const InferenceEvent& event) override {
    absl::MutexLock lock(&mu_);
    result_.Add(event);
  }
  void OnDone(const absl::Status& status) override;

  // After Start returned: the router's id, and whether the client cancelled meanwhile.
  bool SetCallId(const std::string& id) {
    absl::MutexLock lock(&mu_);
    call_id_ = id;
    return cancelled_ && !done_;
  }
  // The client cancelled: the id to cancel, empty when none (not started yet, or done).
  std::string MarkCancelled() {
    absl::MutexLock lock(&mu_);
    cancelled_ = true;
    return done_ ? std::string() : call_id_;
  }
  // Claims the right to finish the RPC (exactly one caller gets true).
  bool Claim() {
    absl::MutexLock lock(&mu_);
    if (done_) return false;
    done_ = true;
    return true;
  }

 private:
  ModelInferReactor* const reactor_;  // alive until it is finished, which only the claimant does
  absl::Mutex mu_;
  GenerationResult result_ ABSL_GUARDED_BY(mu_);
  std::string call_id_ ABSL_GUARDED_BY(mu_);
  bool cancelled_ ABSL_GUARDED_BY(mu_) = false;
  bool done_ ABSL_GUARDED_BY(mu_) = false;
};

class ModelInferReactor : public grpc::ServerUnaryReactor {
 public:
  ModelInferReactor(InferenceRouter* router, KServeInferCall call, ModelInferResponse* resp)
      : router_(router), call_(std::move(call)), resp_(resp), observer_(std::make_shared<UnaryObserver>(this)) {}

  void Start() {
    // Once Start succeeded the call may end (and this reactor be deleted) at any moment: only
    // locals are used after it.
    InferenceRouter* router = router_;
    std::shared_ptr<UnaryObserver> observer = observer_;
    auto id = router->Start(call_.call, observer);  // events may arrive before it returns
    if (!id.ok()) {
      if (observer->Claim()) Finish(ToGrpcStatus(id.status()));  // no OnDone follows a failed Start
      return;
    }
    if (observer->SetCallId(*id)) router->Cancel(*id);
  }

  void OnCancel() override {
    std::string id = observer_->MarkCancelled();
    if (!id.empty()) router_->Cancel(id);
  }
  void OnDone() override { delete this; }

  // From the observer, once: the call ended.
  void Complete(const absl::Status& status, const GenerationResult& result) {
    absl::Status s = status;
    if (s.ok()) s = FillInferResponse(call_, result, resp_);
    if (!s.ok()) resp_->Clear();
    Finish(ToGrpcStatus(s));  // the reactor may be deleted from here on
  }

 private:
  InferenceRouter* const router_;
  const KServeInferCall call_;
  ModelInferResponse* const resp_;
  const std::shared_ptr<UnaryObserver> observer_;
};

void UnaryObserver::OnDone(const absl::Status& status) {
  if (!Claim()) return;
  GenerationResult result;
  {
    absl::MutexLock lock(&mu_);
    result = std::move(result_);
  }
  reactor_->Complete(status, result);
}

// --- ModelStreamInfer: many requests on one stream, one response per token. ---

class FinishedBidiReactor : public grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse> {
 public:
  explicit FinishedBidiReactor(const grpc::Status& status) { Finish(status); }
  void OnDone() override { delete this; }
};

class StreamInferReactor : public grpc::ServerBidiReactor<ModelInferRequest, ModelStreamInferResponse> {
 public:
  StreamInferReactor(KServeServiceImpl* service, InferenceRouter* router) : service_(service), router_(router) {
    StartRead(&req_);
  }

  void OnReadDone(bool ok) override {
    Action a;
    bool start = false;
    {
      absl::MutexLock lock(&mu_);
      if (ok && !aborted_) {
        ++in_read_handler_;  // holds the finish off until the next read is issued
        start = true;
      } else {  // the client half-closed (or the stream broke), or calls no longer start
        reads_done_ = true;
        a = NextLocked();
      }
    }
    if (!start) {
      Run(std::move(a));
      return;
    }
    ModelInferRequest req = std::move(req_);
    req_.Clear();
    StartCall(req);
    bool read_more = false;
    {
      absl::MutexLock lock(&mu_);
      read_more = !aborted_;
      if (!read_more) reads_done_ = true;
    }
    if (read_more) StartRead(&req_);  // in_read_handler_ > 0: never after Finish
    {
      absl::MutexLock lock(&mu_);
      --in_read_handler_;
      a = NextLocked();
    }
    Run(std::move(a));
  }

  void OnWriteDone(bool ok) override {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      writing_ = false;
      if (!ok) a.cancel_ids = AbortLocked(grpc::Status(grpc::StatusCode::CANCELLED, "the stream broke"));
      Action next = NextLocked();
      a.write = next.write;
      a.finish = next.finish;
      a.status = next.status;
    }
    Run(std::move(a));
  }

  void OnCancel() override {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      a.cancel_ids = AbortLocked(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
      Action next = NextLocked();
      a.write = next.write;
      a.finish = next.finish;
      a.status = next.status;
    }
    Run(std::move(a));
  }

  void OnDone() override { delete this; }

  // From the calls' observers (worker stream threads).
  void OnCallEvent(uint64_t key, const InferenceEvent& event) {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      auto it = calls_.find(key);
      if (it == calls_.end() || aborted_) return;
      Pending& p = it->second;
      p.result.Add(event);
      if (!event.has_generate()) return;
      for (int32_t token : event.generate().token_ids()) {
        ModelStreamInferResponse r;
        ModelInferResponse* ir = Header(p, &r);
        (*ir->mutable_parameters())[kFinalFlag].set_bool_param(false);
        for (const std::string& name : p.call.outputs.order) {
          if (name == kOutputIds) AddOutputIds(ir, {token});
          else if (!p.sent_logits && !p.result.logits.empty()) AddLogits(ir, p.result.logits);
        }
        if (p.call.outputs.logits && !p.result.logits.empty()) p.sent_logits = true;
        queue_.push_back(std::move(r));
      }
      a = NextLocked();
    }
    Run(std::move(a));
  }

  void OnCallDone(uint64_t key, const absl::Status& status) {
    Action a;
    {
      absl::MutexLock lock(&mu_);
      auto it = calls_.find(key);
      if (it == calls_.end()) return;
      Pending p = std::move(it->second);
      calls_.erase(it);
      if (!aborted_) {
        ModelStreamInferResponse r;
        ModelInferResponse* ir = Header(p, &r);
        absl::Status s = status;
        if (s.ok() && p.call.outputs.logits && !p.sent_logits) {
          // No token was generated: the logits go in the final response.
          if (p.result.logits.empty() || p.result.logits.size() % 4 != 0) {
            s = absl::InternalError("the worker returned no prompt logits");
          } else {
            AddLogits(ir, p.result.logits);
          }
        }
        if (!s.ok()) {
          ir->clear_outputs();
          ir->clear_raw_output_contents();
          r.set_error_message(s.ToString());
        } else {
          const auto& res = p.result;
          SetFinishParameters(ir->mutable_parameters(), res.finish_reason, res.prompt_tokens,
                              res.completion_tokens ? res.completion_tokens : static_cast<int32_t>(res.ids.size()),
                              res.seed);
        }
        (*ir->mutable_parameters())[kFinalFlag].set_bool_param(true);
        queue_.push_back(std::move(r));
      }
      a = NextLocked();
    }
    Run(std::move(a));
  }

 private:
  struct Pending {
    KServeInferCall call;
    std::string call_id;  // the router's, once Start returned
    GenerationResult result;
    bool sent_logits = false;
  };
  struct Action {
    std::vector<std::string> cancel_ids;
    bool write = false;
    bool finish = false;
    grpc::Status status;
  };

  class Observer : public InferenceCallObserver {
   public:
    Observer(StreamInferReactor* r, uint64_t key) : reactor_(r), key_(key) {}
    void OnEvent(const InferenceEvent& event) override { reactor_->OnCallEvent(key_, event); }
    void OnDone(const absl::Status& status) override { reactor_->OnCallDone(key_, status); }

   private:
    StreamInferReactor* const reactor_;  // outlives every call: the stream finishes only when none is left
    const uint64_t key_;
  };

  static ModelInferResponse* Header(const Pending& p, ModelStreamInferResponse* r) {
    ModelInferResponse* ir = r->mutable_infer_response();
    ir->set_model_name(p.call.model_name);
    ir->set_model_version(absl::StrCat(p.call.model_version));
    ir->set_id(p.call.id);
    return ir;
  }

  // An error response for a request that never became a call.
  void QueueErrorLocked(const ModelInferRequest& req, const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    ModelStreamInferResponse r;
    r.set_error_message(s.ToString());
    ModelInferResponse* ir = r.mutable_infer_response();
    ir->set_model_name(req.model_name());
    ir->set_model_version(req.model_version());
    ir->set_id(req.id());
    (*ir->mutable_parameters())[kFinalFlag].set_bool_param(true);
    queue_.push_back(std::move(r));
  }

  void StartCall(const ModelInferRequest& req) {
    auto prepared = service_->PrepareInfer(req);
    if (prepared.ok() && router_ == nullptr) prepared = absl::UnavailableError("inference routing is not available");
    if (!prepared.ok()) {
      absl::MutexLock lock(&mu_);
      QueueErrorLocked(req, prepared.status());
      return;
    }
    InferenceCall call = prepared->call;
    uint64_t key;
    {
      absl::MutexLock lock(&mu_);
      key = next_key_++;
      calls_[key].call = *std::move(prepared);
    }
    auto id = router_->Start(std::move(call), std::make_shared<Observer>(this, key));
    bool cancel = false;
    {
      absl::MutexLock lock(&mu_);
      auto it = calls_.find(key);
      if (!id.ok()) {
        if (it != calls_.end()) calls_.erase(it);
        QueueErrorLocked(req, id.status());
        return;
      }
      if (it != calls_.end()) {  // else it already ended
        it->second.call_id = *id;
        cancel = aborted_;
      }
    }
    if (cancel) router_->Cancel(*id);
  }

  // Stops taking work: drops queued responses and returns the calls to cancel. The stream
  // finishes with `status` once every call has ended.
  std::vector<std::string> AbortLocked(const grpc::Status& status) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    std::vector<std::string> ids;
    if (aborted_) return ids;
    aborted_ = true;
    abort_status_ = status;
    queue_.clear();
    for (const auto& [key, p] : calls_) {
      if (!p.call_id.empty()) ids.push_back(p.call_id);
    }
    return ids;
  }

  // What to do next: write the next response, or finish. Marks it as under way.
  Action NextLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
    Action a;
    if (finished_ || writing_) return a;
    if (aborted_) {
      if (calls_.empty() && in_read_handler_ == 0) {
        finished_ = true;
        a.finish = true;
        a.status = abort_status_;
      }
      return a;
    }
    if (!queue_.empty()) {
      out_ = std::move(queue_.front());
      queue_.pop_front();
      writing_ = true;
      a.write = true;
      return a;
    }
    if (reads_done_ && calls_.empty() && in_read_handler_ == 0) {
      finished_ = true;
      a.finish = true;
      a.status = grpc::Status::OK;
    }
    return a;
  }

  // Outside the lock: cancellations first (they may end calls synchronously), then the write or
  // the finish. Nothing touches the reactor after Finish.
  void Run(Action a) {
    for (const std::string& id : a.cancel_ids) router_->Cancel(id);
    if (a.write) {
      StartWrite(&out_);  // out_ is not touched again until OnWriteDone
    } else if (a.finish) {
      Finish(a.status);
    }
  }

  KServeServiceImpl* const service_;
  InferenceRouter* const router_;
  ModelInferRequest req_;  // the read in progress

  absl::Mutex mu_;
  std::map<uint64_t, Pending> calls_ ABSL_GUARDED_BY(mu_);
  uint64_t next_key_ ABSL_GUARDED_BY(mu_) = 0;
  std::deque<ModelStreamInferResponse> queue_ ABSL_GUARDED_BY(mu_);
  ModelStreamInferResponse out_;  // the write in progress (owned by it while writing_)
  bool writing_ ABSL_GUARDED_BY(mu_) = false;
  bool reads_done_ ABSL_GUARDED_BY(mu_) = false;
  int in_read_handler_ ABSL_GUARDED_BY(mu_) = 0;
  bool aborted_ ABSL_GUARDED_BY(mu_) = false;
  bool finished_ ABSL_GUARDED_BY(mu_) = false;
  grpc::Status abort_status_ ABSL_GUARDED_BY(mu_);
};

// Finishes a unary call from a completion callback exactly once.
class AsyncReply {
 public:
  explicit AsyncReply(grpc::ServerUnaryReactor* reactor) : reactor_(reactor) {}
  void Finish(const absl::Status& s) {
    if (!done_.exchange(true)) reactor_->Finish(ToGrpcStatus(s));
  }

 private:
  grpc::ServerUnaryReactor* const reactor_;
  std::atomic<bool> done_{false};
};

absl::Status CheckRepositoryParameters(
    const google::protobuf::Map<std::string, inference::ModelRepositoryParameter>& params) {
  for (const auto& [key, value] : params) {
    if (key == "config" || absl::StartsWith(key, "file:")) {
      return Invalid(absl::StrCat("parameter \"", key,
                                  "\" is not supported: models come from the registry (mqctl models upload)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> KServeModelRef(const std::string& name, const std::string& version) {
  if (name.empty()) return Invalid("the model name is required");
  std::string ref = version.empty() ? name : absl::StrCat(name, ":", version);
  auto parsed = ParseRef(ref);
  if (!parsed.ok()) return Invalid(absl::StrCat("model \"", name, "\" version \"", version, "\": ", parsed.status().message()));
  return ref;
}

namespace {
// The registry model a KServe (name, version) pair names: INVALID_ARGUMENT for a malformed pair,
// NOT_FOUND for an unknown model.
absl::StatusOr<Artifact> GetKServeModel(Registry* registry, const std::string& name, const std::string& version) {
  auto ref = KServeModelRef(name, version);
  if (!ref.ok()) return ref.status();
  return registry->Get(ARTIFACT_KIND_MODEL, *ref);
}
}  // namespace

absl::StatusOr<KServeInferCall> TranslateInferRequest(const ModelInferRequest& req) {
  KServeInferCall out;
  out.id = req.id();
  std::vector<int32_t> ids;
  absl::Status s = ParseInputIds(req, &ids);
  if (!s.ok()) return s;
  auto outputs = ParseOutputs(req);
  if (!outputs.ok()) return outputs.status();
  out.outputs = *std::move(outputs);
  auto* g = out.call.mutable_generate();
  g->mutable_prompt_tokens()->mutable_ids()->Add(ids.begin(), ids.end());
  for (const auto& [name, value] : req.parameters()) {
    s = ApplyParameter(name, value, g);
    if (!s.ok()) return s;
  }
  out.call.set_return_prompt_logits(out.outputs.logits);
  return out;
}

absl::StatusOr<KServeInferCall> KServeServiceImpl::PrepareInfer(const ModelInferRequest& req) {
  // The model first: an unknown one is NOT_FOUND whatever the inputs look like (they are that
  // model's to judge), and a Vim model is said to be one rather than failing the text inputs' check.
  auto ref = KServeModelRef(req.model_name(), req.model_version());
  if (!ref.ok()) return ref.status();
  auto model = deps_.registry->Get(ARTIFACT_KIND_MODEL, *ref);
  if (!model.ok()) return model.status();
  if (model->model_type() == kVimModelType) {
    return absl::InvalidArgumentError(absl::StrCat("model ", FormatRef(model->name(), model->version()),
                                                   " is a Vision Mamba image classifier: ModelInfer classifies with it; "
                                                   "ModelStreamInfer streams the tokens of text models"));
  }
  auto call = TranslateInferRequest(req);
  if (!call.ok()) return call.status();
  call->model_name = model->name();
  call->model_version = model->version();
  call->call.set_model(FormatRef(model->name(), model->version()));
  call->call.mutable_generate()->set_model(call->call.model());
  return call;
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerLive(grpc::CallbackServerContext* ctx,
                                                        const inference::ServerLiveRequest*,
                                                        inference::ServerLiveResponse* resp) {
  absl::Status s;
  resp->set_live(true);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerReady(grpc::CallbackServerContext* ctx,
                                                         const inference::ServerReadyRequest*,
                                                         inference::ServerReadyResponse* resp) {
  absl::Status s;
  resp->set_ready(deps_.router != nullptr && deps_.router->AnyWorker());
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelReady(grpc::CallbackServerContext* ctx,
                                                        const inference::ModelReadyRequest* req,
                                                        inference::ModelReadyResponse* resp) {
  absl::Status s;
  auto model = GetKServeModel(deps_.registry, req->name(), req->version());
  if (absl::IsNotFound(model.status())) {  // as Triton: an unknown model is not ready
    resp->set_ready(false);
    return Reply(ctx, absl::OkStatus());
  }
  if (!model.ok()) return Reply(ctx, model.status());
  resp->set_ready(deps_.router != nullptr && deps_.router->ModelReady(FormatRef(model->name(), model->version())));
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ServerMetadata(grpc::CallbackServerContext* ctx,
                                                            const inference::ServerMetadataRequest*,
                                                            inference::ServerMetadataResponse* resp) {
  absl::Status s;
  resp->set_name("mambaquant-serve");
  resp->set_version(MQ_SERVER_VERSION);
  resp->add_extensions("model_repository");
  resp->add_extensions("model_configuration");
  resp->add_extensions("parameters");
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelMetadata(grpc::CallbackServerContext* ctx,
                                                           const inference::ModelMetadataRequest* req,
                                                           inference::ModelMetadataResponse* resp) {
  absl::Status s;
  auto model = GetKServeModel(deps_.registry, req->name(), req->version());
  if (!model.ok()) return Reply(ctx, model.status());
  auto versions = ModelVersions(deps_.registry, model->name());
  if (!versions.ok()) return Reply(ctx, versions.status());
  resp->set_name(model->name());
  for (int64_t v : *versions) resp->add_versions(absl::StrCat(v));
  resp->set_platform(model->model_type().empty() ? "mamba" : model->model_type());
  if (model->model_type() == kVimModelType) return Reply(ctx, FillVimModelMetadata(deps_.registry, *model, resp));
  auto vocab = VocabSize(deps_.registry, *model);
  FillTensorMetadata(resp->add_inputs(), kInputIds, "INT64", {1, -1});
  FillTensorMetadata(resp->add_outputs(), kOutputIds, "INT64", {1, -1});
  FillTensorMetadata(resp->add_outputs(), kLogits, "FP32", {1, vocab.ok() ? *vocab : -1});
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelConfig(grpc::CallbackServerContext* ctx,
                                                         const inference::ModelConfigRequest* req,
                                                         inference::ModelConfigResponse* resp) {
  absl::Status s;
  auto model = GetKServeModel(deps_.registry, req->name(), req->version());
  if (!model.ok()) return Reply(ctx, model.status());
  inference::ModelConfig* c = resp->mutable_config();
  c->set_name(model->name());
  c->set_platform(model->model_type().empty() ? "mamba" : model->model_type());
  c->set_backend("mambaquant");
  if (model->model_type() == kVimModelType) return Reply(ctx, FillVimModelConfig(deps_.registry, *model, c));
  auto vocab = VocabSize(deps_.registry, *model);
  c->set_max_batch_size(0);  // shapes include the batch dimension, which must be 1
  auto* in = c->add_input();
  in->set_name(kInputIds);
  in->set_data_type(inference::TYPE_INT64);
  in->add_dims(1);
  in->add_dims(-1);
  auto* ids = c->add_output();
  ids->set_name(kOutputIds);
  ids->set_data_type(inference::TYPE_INT64);
  ids->add_dims(1);
  ids->add_dims(-1);
  auto* logits = c->add_output();
  logits->set_name(kLogits);
  logits->set_data_type(inference::TYPE_FP32);
  logits->add_dims(1);
  logits->add_dims(vocab.ok() ? *vocab : -1);
  // ModelStreamInfer sends one response per token: decoupled in Triton's terms.
  c->mutable_model_transaction_policy()->set_decoupled(true);
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::ModelInfer(grpc::CallbackServerContext* ctx,
                                                        const inference::ModelInferRequest* req,
                                                        inference::ModelInferResponse* resp) {
  absl::Status s;
  // A Vision Mamba model classifies images (kserve_classify.h); text models generate. An unknown
  // model or version is NOT_FOUND before any input is looked at.
  auto model = GetKServeModel(deps_.registry, req->model_name(), req->model_version());
  if (!model.ok()) return Reply(ctx, model.status());
  if (model->model_type() == kVimModelType) {
    if (deps_.router == nullptr) return Reply(ctx, absl::UnavailableError("inference routing is not available"));
    return StartClassifyInfer(deps_.router, *model, *req, resp);
  }
  auto call = PrepareInfer(*req);
  if (!call.ok()) return Reply(ctx, call.status());
  if (deps_.router == nullptr) return Reply(ctx, absl::UnavailableError("inference routing is not available"));
  auto* reactor = new ModelInferReactor(deps_.router, *std::move(call), resp);
  reactor->Start();
  return reactor;
}

grpc::ServerBidiReactor<inference::ModelInferRequest, inference::ModelStreamInferResponse>*
KServeServiceImpl::ModelStreamInfer(grpc::CallbackServerContext* ctx) {
  absl::Status s;
  return new StreamInferReactor(this, deps_.router);
}

grpc::ServerUnaryReactor* KServeServiceImpl::RepositoryIndex(grpc::CallbackServerContext* ctx,
                                                             const inference::RepositoryIndexRequest* req,
                                                             inference::RepositoryIndexResponse* resp) {
  absl::Status s;
  std::map<std::string, ModelAvailability> where;  // "name:version" → availability
  if (deps_.router != nullptr) {
    for (ModelAvailability& a : deps_.router->Availability()) {
      std::string key = a.model;
      where.emplace(std::move(key), std::move(a));
    }
  }
  std::vector<std::pair<std::string, int64_t>> models;
  std::string token;
  do {
    auto page = deps_.registry->List(ARTIFACT_KIND_MODEL, "", 1000, token);
    if (!page.ok()) return Reply(ctx, page.status());
    for (const auto& a : page->artifacts) models.emplace_back(a.name(), a.version());
    token = page->next_page_token;
  } while (!token.empty());
  std::sort(models.begin(), models.end());
  for (const auto& [name, version] : models) {
    const std::string ref = FormatRef(name, version);
    auto it = where.find(ref);
    std::string state = "UNAVAILABLE", reason = "not loaded on any worker (loads on first inference or RepositoryModelLoad)";
    if (deps_.router != nullptr && deps_.router->ModelReady(ref)) {
      state = "READY";
      reason.clear();
    } else if (it != where.end() && it->second.loading) {
      state = "LOADING";
      reason.clear();
    }
    if (req->ready() && state != "READY") continue;
    auto* m = resp->add_models();
    m->set_name(name);
    m->set_version(absl::StrCat(version));
    m->set_state(state);
    m->set_reason(reason);
  }
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* KServeServiceImpl::RepositoryModelLoad(grpc::CallbackServerContext* ctx,
                                                                 const inference::RepositoryModelLoadRequest* req,
                                                                 inference::RepositoryModelLoadResponse*) {
  absl::Status s;
  if (s.ok()) s = CheckRepositoryParameters(req->parameters());
  if (!s.ok()) return Reply(ctx, s);
  if (req->model_name().empty()) return Reply(ctx, Invalid("model_name is required"));
  // model_name is "name" (the latest version) or "name:version".
  auto model = deps_.registry->Get(ARTIFACT_KIND_MODEL, req->model_name());
  if (!model.ok()) return Reply(ctx, model.status());
  if (deps_.router == nullptr) return Reply(ctx, absl::UnavailableError("inference routing is not available"));
  const std::string ref = FormatRef(model->name(), model->version());
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto reply = std::make_shared<AsyncReply>(reactor);
  s = deps_.router->LoadModel(ref, [reply, ref](absl::Status done) {
    Log(done.ok() ? LogLevel::kInfo : LogLevel::kWarning, "kserve model load")
        .Kv("model", ref).Kv("status", done.ToString());
    reply->Finish(done);
  });
  if (!s.ok()) reply->Finish(s);
  return reactor;
}

grpc::ServerUnaryReactor* KServeServiceImpl::RepositoryModelUnload(grpc::CallbackServerContext* ctx,
                                                                   const inference::RepositoryModelUnloadRequest* req,
                                                                   inference::RepositoryModelUnloadResponse*) {
  absl::Status s;
  if (req->model_name().empty()) return Reply(ctx, Invalid("model_name is required"));
  auto parsed = ParseRef(req->model_name());
  if (!parsed.ok()) return Reply(ctx, parsed.status());
  auto model = deps_.registry->Get(ARTIFACT_KIND_MODEL, req->model_name());
  if (deps_.router == nullptr) return Reply(ctx, absl::UnavailableError("inference routing is not available"));
  if (absl::IsNotFound(model.status()) && parsed->version != 0) {
    // A version deleted from the registry that a worker still holds can still be unloaded.
    const std::string ref = FormatRef(parsed->name, parsed->version);
    for (const ModelAvailability& a : deps_.router->Availability()) {
      if (a.model != ref) continue;
      grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
      auto reply = std::make_shared<AsyncReply>(reactor);
      deps_.router->UnloadResolved(ref, [reply](absl::Status st) { reply->Finish(st); });
      return reactor;
    }
  }
  if (!model.ok()) return Reply(ctx, model.status());
  // "name" unloads every version some worker holds; "name:version" that version.
  std::set<std::string> targets;
  if (parsed->version != 0) {
    targets.insert(FormatRef(model->name(), model->version()));
  } else {
    const std::string prefix = model->name() + ":";
    for (const ModelAvailability& a : deps_.router->Availability()) {
      if (absl::StartsWith(a.model, prefix)) targets.insert(a.model);
    }
    if (targets.empty()) targets.insert(FormatRef(model->name(), model->version()));
  }
  // Answer once every unload is done, with the first error.
  struct Join {
    absl::Mutex mu;
    size_t left ABSL_GUARDED_BY(mu) = 0;
    absl::Status first ABSL_GUARDED_BY(mu);
  };
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  auto reply = std::make_shared<AsyncReply>(reactor);
  auto join = std::make_shared<Join>();
  {
    absl::MutexLock lock(&join->mu);
    join->left = targets.size();
  }
  auto one_done = [reply, join](const std::string& ref, absl::Status done) {
    Log(done.ok() ? LogLevel::kInfo : LogLevel::kWarning, "kserve model unload")
        .Kv("model", ref).Kv("status", done.ToString());
    absl::Status result;
    {
      absl::MutexLock lock(&join->mu);
      if (join->first.ok() && !done.ok()) join->first = done;
      if (--join->left > 0) return;
      result = join->first;
    }
    reply->Finish(result);
  };
  for (const std::string& ref : targets) {
    auto fired = std::make_shared<std::atomic<bool>>(false);
    auto done = [one_done, fired, ref](absl::Status st) {
      if (!fired->exchange(true)) one_done(ref, st);
    };
    s = deps_.router->UnloadModel(ref, done);
    if (!s.ok()) done(s);
  }
  return reactor;
}

}  // namespace mq::server
