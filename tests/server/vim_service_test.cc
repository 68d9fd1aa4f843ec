// Vision Mamba through the service, as processes on loopback: the vim-digits fixture and image
// datasets built from its reference file are uploaded with mqctl, a quantization job runs on the
// images, and the test images are classified through Classify, KServe ModelInfer and mqctl. The
// float model's served logits equal the engine's own (VimModel in this process), the quantized
// model's served accuracy equals what its job report claims, and bad calls get the right codes.
#include <gtest/gtest.h>
#include <thread>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <grpcpp/create_channel.h>
#include <nlohmann/json.hpp>

#include "cluster.h"
#include "grpc_service.grpc.pb.h"
#include "grpc_status.h"
#include "io/safetensors.h"
#include "io/safetensors_writer.h"
#include "mambaquant/v1/inference.grpc.pb.h"
#include "vim/vim_config.h"
#include "vim/vim_image_set.h"
#include "vim/vim_metrics.h"
#include "vim/vim_model.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

std::string FixtureDir() { return SourceDir() + "/../shared/fixtures/vision"; }
std::string ModelDir() { return FixtureDir() + "/vim-digits"; }
std::string ReferenceFile() { return FixtureDir() + "/vim-digits-reference.safetensors"; }

std::shared_ptr<grpc::Channel> Channel(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(8 << 20);
  args.SetMaxSendMessageSize(8 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

// An image dataset file as datasets hold it: `images` and, when given, `labels`.
void WriteImageSet(const std::string& path, const ImageSet& set, const VimConfig& c, bool with_labels) {
  SafetensorsWriter w;
  w.AddF32("images", {set.count, c.in_chans, c.img_size, c.img_size}, set.images);
  if (with_labels) {
    std::vector<uint8_t> bytes(set.labels.size() * sizeof(int64_t));
    std::memcpy(bytes.data(), set.labels.data(), bytes.size());
    w.Add("labels", DType::kI64, {set.count}, std::move(bytes));
  }
  ASSERT_TRUE(w.Write(path).ok());
}

ClassifyRequest Request(const std::string& model, const ImageSet& set, int64_t first, int64_t n, const VimConfig& c) {
  ClassifyRequest req;
  req.set_model(model);
  for (int64_t d : {n, c.in_chans, c.img_size, c.img_size}) req.add_shape(d);
  req.set_packed(reinterpret_cast<const char*>(set.images.data() + first * c.image_numel()),
                 static_cast<size_t>(n * c.image_numel()) * sizeof(float));
  return req;
}

std::vector<float> Floats(const std::string& bytes) {
  std::vector<float> out(bytes.size() / 4);
  std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

// Largest |a[i] − b[first + i]|; the engine's float sums depend on how many images share a pass,
// so logits of the same image agree to rounding across batch sizes, not bit for bit.
double MaxDiff(const std::vector<float>& a, const std::vector<float>& b, size_t first) {
  EXPECT_LE(first + a.size(), b.size());
  double d = 0;
  for (size_t i = 0; i < a.size() && first + i < b.size(); ++i) d = std::max(d, std::fabs(double{a[i]} - b[first + i]));
  return d;
}

class VimServiceTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto config = VimConfig::FromFile(ModelDir() + "/config.json");
    ASSERT_TRUE(config.ok()) << config.status().message();
    config_ = new VimConfig(*config);
    auto calib = LoadImageSet(ReferenceFile(), *config_, "calib_");
    auto test = LoadImageSet(ReferenceFile(), *config_, "test_");
    ASSERT_TRUE(calib.ok() && test.ok());
    test_ = new ImageSet(*std::move(test));
    ASSERT_EQ(test_->count, 300);
    cluster_ = new Cluster();
    cluster_->StartServer();
    cluster_->StartWorker();
    WriteImageSet(cluster_->dir().Sub("calib.safetensors"), *calib, *config_, false);
    WriteImageSet(cluster_->dir().Sub("eval.safetensors"), *test_, *config_, true);
    ASSERT_EQ(cluster_->Mqctl({"models", "upload", ModelDir(), "--name", "vim-digits"}), 0) << cluster_->ServerLog();
    ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", cluster_->dir().Sub("calib.safetensors"), "--name", "vim-calib"}), 0);
    ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", cluster_->dir().Sub("eval.safetensors"), "--name", "vim-eval"}), 0);
    // Wait until the worker's inference stream is attached (it registers for jobs first; until the
    // stream is up the server answers UNAVAILABLE "no inference worker is connected").
    auto stub = InferenceService::NewStub(Channel(cluster_->address()));
    grpc::Status s;
    for (int i = 0; i < 150; ++i) {
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
      ClassifyResponse resp;
      s = stub->Classify(&ctx, Request("vim-digits", *test_, 0, 1, *config_), &resp);
      if (s.error_code() != grpc::StatusCode::UNAVAILABLE) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete test_;
    delete config_;
  }
  std::unique_ptr<InferenceService::Stub> Stub() { return InferenceService::NewStub(Channel(cluster_->address())); }
  grpc::Status Classify(const ClassifyRequest& req, ClassifyResponse* resp) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(120));
    return Stub()->Classify(&ctx, req, resp);
  }

  static Cluster* cluster_;
  static VimConfig* config_;
  static ImageSet* test_;
};

Cluster* VimServiceTest::cluster_ = nullptr;
VimConfig* VimServiceTest::config_ = nullptr;
ImageSet* VimServiceTest::test_ = nullptr;

TEST_F(VimServiceTest, FloatClassifyEqualsTheEngineAndKServeEqualsClassify) {
  auto model = VimModel::Load(ModelDir());
  ASSERT_TRUE(model.ok()) << model.status().message();
  std::vector<float> engine(static_cast<size_t>(test_->count * config_->num_classes));
  ASSERT_TRUE((*model)->Classify(test_->images.data(), test_->count, engine.data()).ok());

  ClassifyRequest req = Request("vim-digits", *test_, 0, test_->count, *config_);
  req.set_top_k(3);
  ClassifyResponse resp;
  grpc::Status st = Classify(req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message() << cluster_->WorkerLog(0);
  EXPECT_EQ(resp.model(), "vim-digits:1");
  ASSERT_EQ(resp.num_classes(), config_->num_classes);
  const std::vector<float> served = Floats(resp.logits());
  ASSERT_EQ(served.size(), engine.size());
  EXPECT_LE(MaxDiff(served, engine, 0), 1e-5);
  // And the independent PyTorch reference's logits of these images (the fixture's test_logits).
  auto ref = SafetensorsFile::Open(ReferenceFile());
  ASSERT_TRUE(ref.ok());
  const TensorView* ref_logits = (*ref)->Find("test_logits");
  ASSERT_NE(ref_logits, nullptr);
  EXPECT_LE(MaxDiff(served, ToFloat32(*ref_logits), 0), 1e-4);
  // Top-k: the engine's arg max first, probabilities descending and summing to at most 1.
  const std::vector<int64_t> top1 = TopClasses(engine, config_->num_classes);
  ASSERT_EQ(resp.images_size(), test_->count);
  for (int64_t i = 0; i < test_->count; ++i) {
    const auto& im = resp.images(static_cast<int>(i));
    ASSERT_EQ(im.top_size(), 3);
    EXPECT_EQ(im.top(0).class_id(), top1[static_cast<size_t>(i)]) << i;
    EXPECT_EQ(im.top(0).label(), std::to_string(im.top(0).class_id()));  // id2label of the fixture
    EXPECT_GE(im.top(0).probability(), im.top(1).probability());
    EXPECT_GE(im.top(1).probability(), im.top(2).probability());
    EXPECT_LE(im.top(0).probability() + im.top(1).probability() + im.top(2).probability(), 1.0f + 1e-5f);
  }
  // The same images as repeated floats give the same logits.
  ClassifyRequest values = Request("vim-digits:1", *test_, 5, 7, *config_);
  values.mutable_values()->mutable_values()->Assign(test_->images.begin() + 5 * config_->image_numel(),
                                                    test_->images.begin() + 12 * config_->image_numel());
  ClassifyResponse resp2;
  ASSERT_TRUE(Classify(values, &resp2).ok());
  ASSERT_EQ(resp2.logits().size(), 7u * 10 * 4);
  EXPECT_LE(MaxDiff(Floats(resp2.logits()), engine, 5 * 10), 1e-5);

  // KServe ModelInfer: pixel_values FP32 in, logits FP32 [B, 10] out, the same numbers.
  auto kserve = inference::GRPCInferenceService::NewStub(Channel(cluster_->address()));
  inference::ModelMetadataRequest mreq;
  mreq.set_name("vim-digits");
  inference::ModelMetadataResponse meta;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(kserve->ModelMetadata(&ctx, mreq, &meta).ok());
  }
  EXPECT_EQ(meta.platform(), "vim");
  ASSERT_EQ(meta.inputs_size(), 1);
  EXPECT_EQ(meta.inputs(0).name(), "pixel_values");
  EXPECT_EQ(std::vector<int64_t>(meta.inputs(0).shape().begin(), meta.inputs(0).shape().end()),
            (std::vector<int64_t>{-1, 1, 8, 8}));
  ASSERT_EQ(meta.outputs_size(), 1);
  EXPECT_EQ(std::vector<int64_t>(meta.outputs(0).shape().begin(), meta.outputs(0).shape().end()),
            (std::vector<int64_t>{-1, 10}));
  for (bool raw : {true, false}) {
    inference::ModelInferRequest ireq;
    ireq.set_model_name("vim-digits");
    ireq.set_id("digits");
    auto* in = ireq.add_inputs();
    in->set_name("pixel_values");
    in->set_datatype("FP32");
    for (int64_t d : {int64_t{4}, config_->in_chans, config_->img_size, config_->img_size}) in->add_shape(d);
    if (raw) ireq.add_raw_input_contents(req.packed().substr(0, 4 * 64 * 4));
    else in->mutable_contents()->mutable_fp32_contents()->Assign(test_->images.begin(), test_->images.begin() + 4 * 64);
    if (!raw) ireq.add_outputs()->set_name("logits");  // named or not, the one output
    inference::ModelInferResponse iresp;
    grpc::ClientContext ctx;
    grpc::Status s = kserve->ModelInfer(&ctx, ireq, &iresp);
    ASSERT_TRUE(s.ok()) << s.error_message();
    EXPECT_EQ(iresp.id(), "digits");
    EXPECT_EQ(iresp.model_version(), "1");
    ASSERT_EQ(iresp.outputs_size(), 1);
    EXPECT_EQ(iresp.outputs(0).name(), "logits");
    EXPECT_EQ(std::vector<int64_t>(iresp.outputs(0).shape().begin(), iresp.outputs(0).shape().end()),
              (std::vector<int64_t>{4, 10}));
    ASSERT_EQ(iresp.raw_output_contents_size(), 1);
    ASSERT_EQ(iresp.raw_output_contents(0).size(), 4u * 10 * 4);
    EXPECT_LE(MaxDiff(Floats(iresp.raw_output_contents(0)), engine, 0), 1e-5) << (raw ? "raw" : "fp32_contents");
  }
  // ModelStreamInfer streams text models' tokens: for a Vim model its answer says so.
  {
    inference::ModelInferRequest ireq;
    ireq.set_model_name("vim-digits");
    auto* in = ireq.add_inputs();
    in->set_name("pixel_values");
    in->set_datatype("FP32");
    for (int64_t d : {int64_t{1}, config_->in_chans, config_->img_size, config_->img_size}) in->add_shape(d);
    in->mutable_contents()->mutable_fp32_contents()->Assign(test_->images.begin(), test_->images.begin() + 64);
    grpc::ClientContext ctx;
    auto stream = kserve->ModelStreamInfer(&ctx);
    ASSERT_TRUE(stream->Write(ireq));
    stream->WritesDone();
    inference::ModelStreamInferResponse sresp;
    ASSERT_TRUE(stream->Read(&sresp));
    EXPECT_NE(sresp.error_message().find("is a Vision Mamba image classifier"), std::string::npos) << sresp.error_message();
    while (stream->Read(&sresp)) {
    }
    EXPECT_TRUE(stream->Finish().ok());
  }
}

TEST_F(VimServiceTest, QuantizationJobOnImagesAndServedAccuracyEqualsItsReport) {
  std::string out;
  ASSERT_EQ(cluster_->Mqctl({"jobs", "submit", "--model", "vim-digits", "--preset", "mambaquant", "--bits", "w8a8", "--calib",
                             "vim-calib", "--eval", "vim-eval", "--seed", "3", "--wait", "--json"},
                            &out),
            0)
      << out << cluster_->WorkerLog(0);
  auto job = nlohmann::json::parse(out);
  ASSERT_EQ(job["state"], "JOB_STATE_SUCCEEDED") << out;
  const std::string result = job["result_model"];
  ASSERT_EQ(cluster_->Mqctl({"models", "get", result, "--json"}, &out), 0) << out;
  auto artifact = nlohmann::json::parse(out);
  EXPECT_EQ(artifact["model_type"], "vim");
  auto report = nlohmann::json::parse(artifact["quantization"]["report_json"].get<std::string>());
  const auto& e = report["evaluation"];
  ASSERT_TRUE(e.is_object()) << report.dump();
  EXPECT_EQ(e["count"], 300);
  const double float_accuracy = e["float_accuracy"], quantized_accuracy = e["quantized_accuracy"];
  // The float model's accuracy on these images is the fixture's (reference.json: 0.97).
  EXPECT_NEAR(float_accuracy, 0.97, 1e-9);
  EXPECT_GT(quantized_accuracy, 0.5);  // a working quantized classifier, not chance (0.1)
  std::printf("vim-digits mambaquant w8a8 on %d test images: float accuracy %.4f, quantized %.4f, top-1 agreement %.4f, "
              "mean KL %.6f nats\n", e["count"].get<int>(), float_accuracy, quantized_accuracy,
              e["top1_agreement"].get<double>(), e["mean_kl"].get<double>());

  // Classified through the service (mqctl, in calls of at most 1024 images), the quantized model
  // gets exactly the accuracy its report claims, and the float model the float accuracy.
  for (const auto& [model, claimed] : {std::pair<std::string, double>{result, quantized_accuracy}, {"vim-digits", float_accuracy}}) {
    ASSERT_EQ(cluster_->Mqctl({"classify", "--model", model, "--images", cluster_->dir().Sub("eval.safetensors"), "--json"}, &out), 0)
        << out;
    auto c = nlohmann::json::parse(out);
    EXPECT_EQ(c["count"], 300);
    EXPECT_EQ(c["model"], model.find(':') == std::string::npos ? model + ":1" : model);
    EXPECT_NEAR(c["accuracy"].get<double>(), claimed, 1e-12) << model;
  }
  // The fixture's reference file read directly, its test_ tensors: the same accuracy.
  ASSERT_EQ(cluster_->Mqctl({"classify", "--model", "vim-digits", "--images", ReferenceFile(), "--prefix", "test_", "--json"}, &out), 0)
      << out;
  EXPECT_NEAR(nlohmann::json::parse(out)["accuracy"].get<double>(), float_accuracy, 1e-12);
  // The text form prints the accuracy line.
  ASSERT_EQ(cluster_->Mqctl({"classify", "--model", result, "--images", cluster_->dir().Sub("eval.safetensors")}, &out), 0);
  EXPECT_NE(out.find("accuracy  "), std::string::npos) << out;
  // The quantized model keeps the class names of the source's config.json (id2label).
  ASSERT_EQ(cluster_->Mqctl({"classify", "--model", result, "--images", ReferenceFile(), "--prefix", "test_", "--json"}, &out), 0);
  EXPECT_NE(out.find("\"label\":\""), std::string::npos) << out.substr(0, 400);
  EXPECT_EQ(out.find("\"label\":\"\""), std::string::npos) << out.substr(0, 400);
  // The stored spec shows no text-model sequence length.
  ASSERT_EQ(cluster_->Mqctl({"jobs", "get", job["id"].get<std::string>()}, &out), 0) << out;
  EXPECT_EQ(out.find(" x 256"), std::string::npos) << out;
  // Text-model settings on a Vim job are refused at submission, naming the field.
  for (const auto& [flags, field] : std::vector<std::pair<std::vector<std::string>, std::string>>{
           {{"--smooth-alpha", "0.9"}, "spec.smooth_alpha"},
           {{"--quantize-lm-head"}, "spec.quantize_lm_head"},
           {{"--seq-len", "64"}, "spec.seq_len"},
           {{"--backend", "cuda"}, "spec.backend"}}) {
    std::vector<std::string> args = {"jobs", "submit", "--model", "vim-digits", "--calib", "vim-calib"};
    args.insert(args.end(), flags.begin(), flags.end());
    EXPECT_NE(cluster_->MqctlWithErrors(args, &out), 0) << out;
    EXPECT_NE(out.find("INVALID_ARGUMENT: " + field), std::string::npos) << out;
  }
}

TEST_F(VimServiceTest, BadCallsGetClearErrors) {
  ClassifyResponse resp;
  // Shape other than the model's.
  ClassifyRequest wrong = Request("vim-digits", *test_, 0, 2, *config_);
  wrong.set_shape(2, 4);
  wrong.set_shape(3, 16);
  grpc::Status s = Classify(wrong, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("[batch, 1, 8, 8]"), std::string::npos) << s.error_message();
  // Pixels not matching the shape.
  ClassifyRequest short_pixels = Request("vim-digits", *test_, 0, 2, *config_);
  short_pixels.set_shape(0, 3);
  EXPECT_EQ(Classify(short_pixels, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A non-finite pixel.
  ClassifyRequest nan = Request("vim-digits", *test_, 0, 2, *config_);
  const float bad = std::nanf("");
  nan.mutable_packed()->replace(4 * 70, 4, reinterpret_cast<const char*>(&bad), 4);
  s = Classify(nan, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("pixel 6 of image 1 is not finite"), std::string::npos) << s.error_message();
  // Over the per-call image limit, and top_k over the model's classes.
  // Finite pixels so large the forward overflows: refused, not answered with NaN probabilities.
  {
    ClassifyRequest huge = Request("vim-digits", *test_, 0, 2, *config_);
    std::vector<float> big(huge.packed().size() / 4, 3e38f);
    huge.set_packed(reinterpret_cast<const char*>(big.data()), big.size() * 4);
    grpc::Status hs = Classify(huge, &resp);
    EXPECT_EQ(hs.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << hs.error_message();
    EXPECT_NE(hs.error_message().find("image 0: the model's logits are not finite"), std::string::npos) << hs.error_message();
  }
  ClassifyRequest many = Request("vim-digits", *test_, 0, 1, *config_);
  many.set_shape(0, 1025);
  EXPECT_EQ(Classify(many, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  ClassifyRequest top = Request("vim-digits", *test_, 0, 1, *config_);
  top.set_top_k(11);
  s = Classify(top, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("10 classes"), std::string::npos) << s.error_message();
  // Unknown model.
  EXPECT_EQ(Classify(Request("no-such-model", *test_, 0, 1, *config_), &resp).error_code(), grpc::StatusCode::NOT_FOUND);
  // A Vim model asked to generate.
  {
    GenerateRequest g;
    g.set_model("vim-digits");
    g.set_prompt("hello");
    grpc::ClientContext ctx;
    auto reader = Stub()->Generate(&ctx, g);
    GenerateResponse r;
    while (reader->Read(&r)) {
    }
    s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("image classifier"), std::string::npos) << s.error_message();
  }
  // A text model asked to classify.
  ASSERT_EQ(cluster_->Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", "mamba-tiny"}), 0);
  s = Classify(Request("mamba-tiny", *test_, 0, 1, *config_), &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("text model"), std::string::npos) << s.error_message();
  // KServe: a wrong input name for a Vim model.
  {
    auto kserve = inference::GRPCInferenceService::NewStub(Channel(cluster_->address()));
    inference::ModelInferRequest ireq;
    ireq.set_model_name("vim-digits");
    auto* in = ireq.add_inputs();
    in->set_name("input_ids");
    in->set_datatype("INT64");
    in->add_shape(1);
    in->add_shape(1);
    in->mutable_contents()->add_int64_contents(1);
    inference::ModelInferResponse iresp;
    grpc::ClientContext ctx;
    s = kserve->ModelInfer(&ctx, ireq, &iresp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("pixel_values"), std::string::npos) << s.error_message();
    // pixel_values with a NaN: the Classify check, under the tensor's name.
    in->set_name("pixel_values");
    in->set_datatype("FP32");
    in->clear_shape();
    for (int64_t d : {1, 1, 8, 8}) in->add_shape(d);
    in->clear_contents();
    for (int i = 0; i < 64; ++i) in->mutable_contents()->add_fp32_contents(i == 9 ? std::nanf("") : 0.5f);
    grpc::ClientContext ctx2;
    s = kserve->ModelInfer(&ctx2, ireq, &iresp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_NE(s.error_message().find("pixel_values: pixel 9 of image 0 is not finite"), std::string::npos) << s.error_message();
  }
  // A job pairing the Vim model with a text dataset.
  std::string out;
  ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", SourceDir() + "/models/text/calib.txt", "--name", "text-calib"}), 0);
  EXPECT_NE(cluster_->Mqctl({"jobs", "submit", "--model", "vim-digits", "--preset", "rtn", "--bits", "w8a8", "--calib", "text-calib"},
                            &out),
            0);
  // An image dataset with a NaN pixel is refused at upload.
  ImageSet broken = *test_;
  broken.images[3] = std::nanf("");
  WriteImageSet(cluster_->dir().Sub("broken.safetensors"), broken, *config_, true);
  EXPECT_NE(cluster_->Mqctl({"datasets", "upload", cluster_->dir().Sub("broken.safetensors"), "--name", "broken"}, &out), 0);
  ASSERT_NE(cluster_->Mqctl({"datasets", "get", "broken"}, &out), 0);
  // A label past the model's classes is only known to be wrong against the model: the job fails,
  // naming the job's dataset rather than the worker's cache path of its file.
  ImageSet past = *test_;
  past.labels[0] = config_->num_classes;
  WriteImageSet(cluster_->dir().Sub("past.safetensors"), past, *config_, true);
  ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", cluster_->dir().Sub("past.safetensors"), "--name", "past-labels"}, &out), 0);
  cluster_->Mqctl({"jobs", "submit", "--model", "vim-digits", "--preset", "rtn", "--bits", "w8a8", "--calib", "vim-calib",
                   "--eval", "past-labels", "--wait", "--json"},
                  &out);
  auto failed = nlohmann::json::parse(out);
  EXPECT_EQ(failed["state"], "JOB_STATE_FAILED") << out;
  const std::string error = failed.value("error", "");
  EXPECT_NE(error.find("spec.eval_dataset past-labels:1"), std::string::npos) << error;
  EXPECT_EQ(error.find("/blobs/"), std::string::npos) << error;
}

}  // namespace
}  // namespace mq::test
