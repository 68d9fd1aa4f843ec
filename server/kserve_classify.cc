#include "kserve_classify.h"

#include <memory>
#include <mutex>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "classify_request.h"
#include "grpc_status.h"
#include "registry.h"
#include "vim/vim_config.h"

namespace mq::server {

using inference::ModelInferRequest;
using inference::ModelInferResponse;
using mambaquant::v1::ClassifyRequest;
using mambaquant::v1::ClassifyResponse;
using mambaquant::v1::InferenceCall;
using mambaquant::v1::InferenceEvent;

namespace {

constexpr char kLogits[] = "logits";

absl::Status Invalid(absl::string_view message) { return absl::InvalidArgumentError(message); }

absl::StatusOr<VimConfig> ModelVimConfig(Registry* registry, const mambaquant::v1::Artifact& model) {
  for (const auto& f : model.files()) {
    if (f.path() != "config.json") continue;
    auto config = VimConfig::FromFile(registry->blobs()->BlobPath(f.sha256()));
    if (!config.ok()) return absl::InternalError(config.status().message());
    return *std::move(config);
  }
  return absl::InternalError("the model has no config.json");
}

// One Classify call answered as a ModelInferResponse. The router may call the observer after
// gRPC deleted the reactor: the observer forwards only while the reactor is attached.
class ClassifyInferReactor final : public grpc::ServerUnaryReactor {
 public:
  class Observer final : public InferenceCallObserver {
   public:
    explicit Observer(ClassifyInferReactor* r) : reactor_(r) {}
    void OnEvent(const InferenceEvent& event) override {
      std::lock_guard<std::mutex> l(mu_);
      if (reactor_ != nullptr && event.has_classify()) reactor_->result_ = event.classify();
    }
    void OnDone(const absl::Status& status) override {
      std::lock_guard<std::mutex> l(mu_);
      if (reactor_ != nullptr) reactor_->Complete(status);
    }
    void Detach() {
      std::lock_guard<std::mutex> l(mu_);
      reactor_ = nullptr;
    }

   private:
    std::mutex mu_;
    ClassifyInferReactor* reactor_;
  };

  ClassifyInferReactor(InferenceRouter* router, std::string name, int64_t version, std::string id, ModelInferResponse* resp)
      : router_(router), name_(std::move(name)), version_(version), id_(std::move(id)), resp_(resp),
        observer_(std::make_shared<Observer>(this)) {}

  void Start(InferenceCall call) {
    auto id = router_->Start(std::move(call), observer_);
    std::lock_guard<std::mutex> l(mu_);
    if (!id.ok()) {
      FinishOnce(ToGrpcStatus(id.status()));
      return;
    }
    call_id_ = *id;
    if (cancelled_) router_->Cancel(call_id_);
  }
  // The request was refused before routing.
  void StartFailed(const absl::Status& status) {
    std::lock_guard<std::mutex> l(mu_);
    FinishOnce(ToGrpcStatus(status));
  }
  void OnCancel() override {
    std::string cancel;
    {
      std::lock_guard<std::mutex> l(mu_);
      cancelled_ = true;
      cancel = call_id_;
      FinishOnce(grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client"));
    }
    if (!cancel.empty()) router_->Cancel(cancel);
  }
  void OnDone() override {
    observer_->Detach();
    delete this;
  }

 private:
  void Complete(const absl::Status& status) {
    std::lock_guard<std::mutex> l(mu_);
    if (finished_) return;
    absl::Status s = status;
    if (s.ok() && (result_.num_classes() < 1 || result_.logits().size() % (4 * static_cast<size_t>(result_.num_classes())) != 0))
      s = absl::InternalError("the worker returned no logits");
    if (!s.ok()) {
      FinishOnce(ToGrpcStatus(s));
      return;
    }
    resp_->set_model_name(name_);
    resp_->set_model_version(absl::StrCat(version_));
    resp_->set_id(id_);
    auto* out = resp_->add_outputs();
    out->set_name(kLogits);
    out->set_datatype("FP32");
    out->add_shape(static_cast<int64_t>(result_.logits().size() / 4) / result_.num_classes());
    out->add_shape(result_.num_classes());
    resp_->add_raw_output_contents(result_.logits());
    FinishOnce(grpc::Status::OK);
  }
  void FinishOnce(const grpc::Status& s) {
    if (finished_) return;
    finished_ = true;
    Finish(s);
  }

  InferenceRouter* const router_;
  const std::string name_;
  const int64_t version_;
  const std::string id_;
  ModelInferResponse* const resp_;
  const std::shared_ptr<Observer> observer_;
  std::mutex mu_;  // guards the fields below and *resp_
  ClassifyResponse result_;
  std::string call_id_;
  bool cancelled_ = false;
  bool finished_ = false;
};

}  // namespace

absl::StatusOr<ClassifyRequest> TranslateClassifyInfer(const ModelInferRequest& req) {
  const std::string expected = "exactly one input, pixel_values FP32 [batch, channels, height, width]";
  if (req.inputs_size() != 1) return Invalid(absl::StrCat("expected ", expected, ", got ", req.inputs_size(), " inputs"));
  const auto& in = req.inputs(0);
  if (in.name() != kPixelValues) return Invalid(absl::StrCat("unknown input \"", in.name(), "\": expected ", expected));
  if (in.datatype() != "FP32") return Invalid(absl::StrCat("pixel_values must have datatype FP32, got \"", in.datatype(), "\""));
  if (!in.parameters().empty()) return Invalid("pixel_values takes no parameters (shared memory inputs are not supported)");
  if (!req.parameters().empty())
    return Invalid(absl::StrCat("a Vision Mamba model takes no request parameters, got \"", req.parameters().begin()->first, "\""));
  if (req.outputs_size() > 1) return Invalid("a Vision Mamba model has one output, logits: request it at most once");
  for (const auto& o : req.outputs()) {
    if (o.name() != kLogits) return Invalid(absl::StrCat("unknown output \"", o.name(), "\": the output is logits"));
    if (!o.parameters().empty()) return Invalid("output parameters (classification, shared memory) are not supported");
  }
  const auto& c = in.contents();
  if (c.bool_contents_size() > 0 || c.int_contents_size() > 0 || c.int64_contents_size() > 0 || c.uint_contents_size() > 0 ||
      c.uint64_contents_size() > 0 || c.fp64_contents_size() > 0 || c.bytes_contents_size() > 0)
    return Invalid("pixel_values (FP32) data must be in contents.fp32_contents or raw_input_contents");
  ClassifyRequest out;
  out.mutable_shape()->Assign(in.shape().begin(), in.shape().end());
  if (req.raw_input_contents_size() > 0) {
    if (req.raw_input_contents_size() != 1)
      return Invalid(absl::StrCat("raw_input_contents must have one entry per input (1), got ", req.raw_input_contents_size()));
    if (c.fp32_contents_size() > 0) return Invalid("pixel_values has data both in contents and in raw_input_contents");
    out.set_packed(req.raw_input_contents(0));
  } else {
    if (c.fp32_contents_size() == 0)
      return Invalid("pixel_values has no data: put the values in contents.fp32_contents or little-endian float32 bytes in "
                     "raw_input_contents[0]");
    out.mutable_values()->mutable_values()->Assign(c.fp32_contents().begin(), c.fp32_contents().end());
  }
  // The one check of a Classify request (shape, counts, limits, finite pixels).
  absl::Status s = CheckClassifyRequest(out);
  if (!s.ok()) return Invalid(absl::StrCat("pixel_values: ", s.message()));
  return out;
}

grpc::ServerUnaryReactor* StartClassifyInfer(InferenceRouter* router, const mambaquant::v1::Artifact& model,
                                             const ModelInferRequest& req, ModelInferResponse* resp) {
  auto* reactor = new ClassifyInferReactor(router, model.name(), model.version(), req.id(), resp);
  auto classify = TranslateClassifyInfer(req);
  InferenceCall call;
  call.set_model(absl::StrCat(model.name(), ":", model.version()));
  if (classify.ok()) {
    *call.mutable_classify() = *std::move(classify);
    call.mutable_classify()->set_model(call.model());
  }
  if (!classify.ok()) {
    reactor->StartFailed(classify.status());
    return reactor;
  }
  reactor->Start(std::move(call));
  return reactor;
}

absl::Status FillVimModelMetadata(Registry* registry, const mambaquant::v1::Artifact& model,
                                  inference::ModelMetadataResponse* resp) {
  auto config = ModelVimConfig(registry, model);
  if (!config.ok()) return config.status();
  auto* in = resp->add_inputs();
  in->set_name(kPixelValues);
  in->set_datatype("FP32");
  for (int64_t d : {int64_t{-1}, config->in_chans, config->img_size, config->img_size}) in->add_shape(d);
  auto* out = resp->add_outputs();
  out->set_name(kLogits);
  out->set_datatype("FP32");
  out->add_shape(-1);
  out->add_shape(config->num_classes);
  return absl::OkStatus();
}

absl::Status FillVimModelConfig(Registry* registry, const mambaquant::v1::Artifact& model, inference::ModelConfig* c) {
  auto config = ModelVimConfig(registry, model);
  if (!config.ok()) return config.status();
  c->set_max_batch_size(0);  // the batch is the first dimension of the shapes
  auto* in = c->add_input();
  in->set_name(kPixelValues);
  in->set_data_type(inference::TYPE_FP32);
  for (int64_t d : {int64_t{-1}, config->in_chans, config->img_size, config->img_size}) in->add_dims(d);
  auto* out = c->add_output();
  out->set_name(kLogits);
  out->set_data_type(inference::TYPE_FP32);
  out->add_dims(-1);
  out->add_dims(config->num_classes);
  return absl::OkStatus();
}

}  // namespace mq::server
