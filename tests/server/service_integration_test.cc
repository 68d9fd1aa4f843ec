// mq-server, mq-worker and mqctl as processes on loopback: a real quantization job end to end,
// durability across server and worker deaths, statuses for bad input, authentication.
#include <cmath>
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include <grpcpp/create_channel.h>
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "cluster.h"
#include "grpc_status.h"
#include "sha256.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

// safetensors: tensor name -> (dtype, shape, bytes).
std::map<std::string, std::string> ReadTensors(const std::string& path) {
  std::string file = ReadFileOrDie(path);
  EXPECT_GE(file.size(), 8u);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<unsigned char>(file[static_cast<size_t>(i)]);
  auto header = nlohmann::json::parse(file.substr(8, n));
  std::map<std::string, std::string> tensors;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    uint64_t begin = entry["data_offsets"][0], end = entry["data_offsets"][1];
    tensors[name] = absl::StrCat(entry["dtype"].get<std::string>(), " ", entry["shape"].dump(), " ",
                                 Sha256Hex(absl::string_view(file).substr(8 + n + begin, end - begin)));
  }
  return tensors;
}

std::string SubmitWithMqctl(Cluster& c, std::vector<std::string> extra) {
  std::vector<std::string> args = {"jobs", "submit", "--model", "mamba-tiny", "--preset", "mambaquant", "--bits", "w8a8",
                                   "--calib", "calib", "--json"};
  args.insert(args.end(), extra.begin(), extra.end());
  std::string out;
  EXPECT_EQ(c.Mqctl(args, &out), 0) << out;
  return nlohmann::json::parse(out)["id"].get<std::string>();
}

TEST(ServiceIntegration, QuantizedModelFromServiceEqualsLocalEngineOutput) {
  Cluster c;
  c.StartServer();
  c.StartWorker();
  c.UploadBundled();
  std::string out;
  ASSERT_EQ(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--preset", "mambaquant", "--bits", "w8a8", "--calib",
                     "calib", "--samples", "16", "--seq-len", "64", "--seed", "7", "--wait", "--json"},
                    &out),
            0)
      << out;
  auto job = nlohmann::json::parse(out);
  ASSERT_EQ(job["state"], "JOB_STATE_SUCCEEDED");
  const std::string result = job["result_model"];
  EXPECT_EQ(result, "mamba-tiny-mambaquant-w8a8:1");
  ASSERT_EQ(c.Mqctl({"models", "download", result, "--out", c.dir().Sub("downloaded")}, &out), 0) << out;

  ASSERT_EQ(RunCommand({MQ_ENGINE_BIN, "quantize", "--model", SourceDir() + "/models/mamba-tiny", "--preset", "mambaquant",
                        "--bits", "w8a8", "--scope", "linear", "--calib", SourceDir() + "/models/text/calib.txt",
                        "--samples", "16", "--seq-len", "64", "--seed", "7", "--out", c.dir().Sub("local"), "--json"},
                       &out),
            0)
      << out;
  int compared = 0;
  for (const auto& entry : std::filesystem::directory_iterator(c.dir().Sub("local"))) {
    std::string name = entry.path().filename().string();
    ASSERT_TRUE(std::filesystem::exists(c.dir().Sub("downloaded/" + name))) << name;
    if (entry.path().extension() != ".safetensors") continue;
    auto local = ReadTensors(entry.path().string());
    auto served = ReadTensors(c.dir().Sub("downloaded/" + name));
    ASSERT_FALSE(local.empty());
    EXPECT_EQ(local.size(), served.size());
    for (const auto& [tensor, desc] : local) {
      EXPECT_EQ(served[tensor], desc) << tensor;
      ++compared;
    }
    EXPECT_EQ(ReadFileOrDie(entry.path().string()), ReadFileOrDie(c.dir().Sub("downloaded/" + name))) << name;
  }
  EXPECT_GT(compared, 0);
  // The registry entry carries provenance and the report.
  ASSERT_EQ(c.Mqctl({"models", "get", result, "--json"}, &out), 0);
  auto model = nlohmann::json::parse(out);
  EXPECT_EQ(model["quantization"]["source_model"], "mamba-tiny:1");
  EXPECT_TRUE(nlohmann::json::parse(model["quantization"]["report_json"].get<std::string>()).is_object());
}

// Accuracy-driven mode as a job option: the worker tunes on held-out calibration text, the
// report says what it tried, and the kept configuration is within the budget by the report's own
// held-out measurement (or says it was not met).
TEST(ServiceIntegration, TolerableLossJobReportsItsTrialsAndKeepsOneWithinBudget) {
  Cluster c;
  c.StartServer();
  c.StartWorker();
  c.UploadBundled();
  std::string out;
  ASSERT_EQ(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--bits", "w8a8", "--calib", "calib", "--samples", "16",
                     "--seq-len", "128", "--tolerable-loss", "1", "--wait", "--json"},
                    &out),
            0)
      << out;
  auto job = nlohmann::json::parse(out);
  ASSERT_EQ(job["state"], "JOB_STATE_SUCCEEDED") << out;
  ASSERT_EQ(c.Mqctl({"models", "get", job["result_model"].get<std::string>(), "--json"}, &out), 0) << out;
  const auto model = nlohmann::json::parse(out);
  auto report = nlohmann::json::parse(model["quantization"]["report_json"].get<std::string>());
  ASSERT_TRUE(report["tuning"].is_object()) << report.dump();
  // The registry records the preset the tuner built (the cheapest within budget is rtn or quarot
  // here, not the job's mambaquant), and the description says how it was chosen.
  EXPECT_EQ(model["quantization"]["preset"], report["preset"]) << out;
  EXPECT_NE(model["description"].get<std::string>().find(report["preset"].get<std::string>() + " w8a8 quantization"),
            std::string::npos) << out;
  EXPECT_NE(model["description"].get<std::string>().find("accuracy-driven"), std::string::npos) << out;
  const auto& t = report["tuning"];
  EXPECT_EQ(t["tolerable_loss_percent"].get<double>(), 1.0);
  ASSERT_FALSE(t["trials"].empty());
  EXPECT_TRUE(t["met"].get<bool>()) << t.dump();  // W8A8 on mamba-tiny is well within 1 %
  const auto& last = t["trials"].back();
  EXPECT_EQ(t["chosen"], last["name"]);
  EXPECT_LE(last["loss_percent"].get<double>(), 1.0);
  EXPECT_EQ(report["preset"], last["preset"]);
  // Out of range is refused before any worker sees it (the code: BadSpecValuesAreInvalidArgument).
  EXPECT_NE(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--calib", "calib", "--tolerable-loss", "0"}, &out), 0);
}

// W4A8 mixed precision chosen by hand through the service: the registry records the 8-bit layers
// and the export the worker made holds them (layer 1's linears I8 [out, in], layer 0's packed);
// a layer the model does not have fails the job at LOAD with a message naming it.
TEST(ServiceIntegration, MixedPrecisionJobRecordsAndExportsItsEightBitLayers) {
  Cluster c;
  c.StartServer();
  c.StartWorker();
  c.UploadBundled();
  std::string out;
  ASSERT_EQ(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--bits", "w4a8", "--calib", "calib", "--samples", "8",
                     "--seq-len", "64", "--w8-layers", "1", "--wait", "--json"},
                    &out),
            0)
      << out;
  auto job = nlohmann::json::parse(out);
  ASSERT_EQ(job["state"], "JOB_STATE_SUCCEEDED") << out;
  const std::string result = job["result_model"];
  ASSERT_EQ(c.Mqctl({"models", "get", result, "--json"}, &out), 0) << out;
  const auto model = nlohmann::json::parse(out);
  EXPECT_EQ(model["quantization"]["w8_layers"], nlohmann::json::array({1})) << out;
  const auto report = nlohmann::json::parse(model["quantization"]["report_json"].get<std::string>());
  EXPECT_EQ(report["w8_layers"], nlohmann::json::array({1}));
  EXPECT_EQ(report["bits"], "w4a8");
  ASSERT_EQ(c.Mqctl({"models", "download", result, "--out", c.dir().Sub("mixed")}, &out), 0) << out;
  const auto config = nlohmann::json::parse(ReadFileOrDie(c.dir().Sub("mixed/config.json")));
  EXPECT_EQ(config["quantization_config"]["format_version"], 3);
  EXPECT_EQ(config["quantization_config"]["w8_layers"], nlohmann::json::array({1}));
  auto tensors = ReadTensors(c.dir().Sub("mixed/model.safetensors"));
  EXPECT_NE(tensors["backbone.layers.0.mixer.in_proj.weight"].find("U8"), std::string::npos)
      << tensors["backbone.layers.0.mixer.in_proj.weight"];
  EXPECT_NE(tensors["backbone.layers.1.mixer.in_proj.weight"].find("I8"), std::string::npos)
      << tensors["backbone.layers.1.mixer.in_proj.weight"];

  ASSERT_EQ(c.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--bits", "w4a8", "--calib", "calib", "--samples", "8",
                     "--seq-len", "64", "--w8-layers", "5", "--wait", "--json"},
                    &out),
            3)
      << out;
  EXPECT_NE(out.find("w8_layers: layer 5 is not in [0, 2)"), std::string::npos) << out;
}

TEST(ServiceIntegration, ServerKilledWithQueuedAndRunningJobsLosesNothing) {
  Cluster c;
  c.StartServer();
  c.StartWorker();
  c.UploadBundled();
  std::vector<std::string> heavy = {"--samples", "128", "--seq-len", "256", "--eval", "eval"};
  std::string running = SubmitWithMqctl(c, heavy);
  std::string queued = SubmitWithMqctl(c, heavy);
  Job r = c.WaitJob(running, absl::Seconds(60), [](const Job& j) { return j.state() == JOB_STATE_RUNNING; });
  ASSERT_EQ(r.state(), JOB_STATE_RUNNING);
  ASSERT_EQ(c.GetJob(queued)->state(), JOB_STATE_QUEUED);
  c.KillServer();
  absl::SleepFor(absl::Milliseconds(500));
  c.StartServer();
  for (const std::string& id : {running, queued}) {
    Job j = c.WaitJob(id, absl::Seconds(180), [](const Job& j) { return IsTerminalState(j.state()); });
    EXPECT_EQ(j.state(), JOB_STATE_SUCCEEDED) << id << " " << j.error();
    EXPECT_FALSE(j.result_model().empty());
  }
  std::string out;
  ASSERT_EQ(c.Mqctl({"models", "list", "--name", "mamba-tiny-mambaquant-w8a8", "--json"}, &out), 0);
  EXPECT_EQ(nlohmann::json::parse(out)["artifacts"].size(), 2u);
}

TEST(ServiceIntegration, WorkerKilledMidJobIsRequeuedAndCompletesOnAnother) {
  Cluster c;
  c.StartServer();
  int first = c.StartWorker();
  c.UploadBundled();
  std::string id = SubmitWithMqctl(c, {"--samples", "128", "--seq-len", "256", "--eval", "eval"});
  Job r = c.WaitJob(id, absl::Seconds(60), [](const Job& j) { return j.state() == JOB_STATE_RUNNING; });
  ASSERT_EQ(r.state(), JOB_STATE_RUNNING);
  const std::string dead_worker = r.worker_id();
  c.worker(first).Kill();
  c.StartWorker();
  Job done = c.WaitJob(id, absl::Seconds(180), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_SUCCEEDED) << done.error();
  EXPECT_EQ(done.attempt(), 2);
  EXPECT_NE(done.worker_id(), dead_worker);
}

class BadInputTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster();
    cluster_->StartServer();
    cluster_->UploadBundled();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    cluster_ = nullptr;
  }

  // Every observable registry and job listing, to show a rejected call changed nothing.
  std::string Snapshot() {
    std::string all, out;
    for (auto cmd : {std::vector<std::string>{"models", "list", "--json"}, {"datasets", "list", "--json"},
                     {"jobs", "list", "--json"}}) {
      cluster_->Mqctl(cmd, &out);
      all += out;
    }
    return all;
  }

  absl::StatusOr<Upload> Create(const std::string& name, const std::string& path, const std::string& content,
                                ArtifactKind kind = ARTIFACT_KIND_DATASET, int64_t version = 0) {
    CreateUploadRequest req;
    req.set_kind(kind);
    req.set_name(name);
    req.set_version(version);
    auto* f = req.add_files();
    f->set_path(path);
    f->set_size(content.size());
    f->set_sha256(Sha256Hex(content));
    grpc::ClientContext ctx;
    Upload upload;
    absl::Status s = FromGrpcStatus(cluster_->registry().CreateUpload(&ctx, req, &upload));
    if (!s.ok()) return s;
    return upload;
  }

  absl::Status Send(const Upload& upload, const std::string& path, uint64_t offset, const std::string& data) {
    grpc::ClientContext ctx;
    UploadChunksResponse resp;
    auto writer = cluster_->registry().UploadChunks(&ctx, &resp);
    UploadChunk chunk;
    chunk.set_upload_id(upload.upload_id());
    chunk.set_path(path);
    chunk.set_offset(offset);
    chunk.set_data(data);
    writer->Write(chunk);
    writer->WritesDone();
    return FromGrpcStatus(writer->Finish());
  }

  absl::Status Commit(const Upload& upload) {
    grpc::ClientContext ctx;
    CommitUploadRequest req;
    req.set_upload_id(upload.upload_id());
    Artifact a;
    return FromGrpcStatus(cluster_->registry().CommitUpload(&ctx, req, &a));
  }

  absl::Status Submit(const std::string& model, const std::string& calib) {
    grpc::ClientContext ctx;
    SubmitJobRequest req;
    req.mutable_spec()->set_model(model);
    req.mutable_spec()->set_calib_dataset(calib);
    Job job;
    return FromGrpcStatus(cluster_->jobs().SubmitJob(&ctx, req, &job));
  }

  static Cluster* cluster_;
};
Cluster* BadInputTest::cluster_ = nullptr;

TEST_F(BadInputTest, CorruptUploadIsDataLossAndRegistersNothing) {
  const std::string before = Snapshot();
  auto upload = Create("corrupt", "data.txt", "the declared content");
  ASSERT_TRUE(upload.ok()) << upload.status();
  absl::Status s = Send(*upload, "data.txt", 0, "THE declared content");  // same size, other bytes
  EXPECT_EQ(s.code(), absl::StatusCode::kDataLoss) << s;
  EXPECT_EQ(Commit(*upload).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(BadInputTest, BytesBeyondDeclaredSizeAreInvalidArgument) {
  const std::string before = Snapshot();
  auto upload = Create("oversize", "data.txt", "short");
  ASSERT_TRUE(upload.ok());
  EXPECT_EQ(Send(*upload, "data.txt", 0, "much longer than declared").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Send(*upload, "data.txt", 2, "or").code(), absl::StatusCode::kFailedPrecondition);  // wrong offset
  EXPECT_EQ(Send(*upload, "other.txt", 0, "short").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Snapshot(), before);
  // A resumed, correct upload still works afterwards.
  ASSERT_TRUE(Send(*upload, "data.txt", 0, "sh").ok());
  ASSERT_TRUE(Send(*upload, "data.txt", 2, "ort").ok());
  EXPECT_TRUE(Commit(*upload).ok());
}

TEST_F(BadInputTest, DeclaredSizeContradictingStoredBlobIsInvalidArgument) {
  // calib.txt's digest is stored; declaring it with another size is a lie we can detect early.
  std::string calib = ReadFileOrDie(SourceDir() + "/models/text/calib.txt");
  CreateUploadRequest req;
  req.set_kind(ARTIFACT_KIND_DATASET);
  req.set_name("liar");
  auto* f = req.add_files();
  f->set_path("calib.txt");
  f->set_size(calib.size() + 1);
  f->set_sha256(Sha256Hex(calib));
  grpc::ClientContext ctx;
  Upload upload;
  EXPECT_EQ(cluster_->registry().CreateUpload(&ctx, req, &upload).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// Re-uploading identical content returns the existing version (--new-version forces one), and a
// download skips files already present with the right digest (and repairs one that is not).
TEST_F(BadInputTest, IdenticalUploadKeepsItsVersionAndDownloadsSkipWhatIsThere) {
  std::string out;
  const std::string text = SourceDir() + "/models/text/calib.txt";
  ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", text, "--name", "dedupe", "--json"}, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["version"], "1");
  ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", text, "--name", "dedupe"}, &out), 0) << out;
  EXPECT_NE(out.find("dedupe:1 unchanged"), std::string::npos) << out;
  ASSERT_EQ(cluster_->Mqctl({"datasets", "upload", text, "--name", "dedupe", "--new-version", "--json"}, &out), 0) << out;
  EXPECT_EQ(nlohmann::json::parse(out)["version"], "2");

  const std::string dir = cluster_->dir().Sub("download");
  ASSERT_EQ(cluster_->Mqctl({"models", "download", "mamba-tiny", "--out", dir}, &out), 0) << out;
  const std::string config = dir + "/config.json";
  const auto mtime = std::filesystem::last_write_time(config);
  const std::string weights = dir + "/model.safetensors";
  { std::ofstream(weights, std::ios::binary | std::ios::in | std::ios::out) << "XXXX"; }  // corrupt 4 bytes in place
  ASSERT_EQ(cluster_->Mqctl({"models", "download", "mamba-tiny", "--out", dir}, &out), 0) << out;
  EXPECT_EQ(std::filesystem::last_write_time(config), mtime) << "a file with the right digest was fetched again";
  EXPECT_EQ(Sha256Hex(ReadFileOrDie(weights)), Sha256Hex(ReadFileOrDie(SourceDir() + "/models/mamba-tiny/model.safetensors")));
}

// A TLS client (no --insecure) meeting the plaintext server gets a hint, not only OpenSSL's text.
TEST_F(BadInputTest, TransportMismatchSaysWhatToDo) {
  std::string out;
  EXPECT_EQ(RunCommand({"/bin/sh", "-c", std::string("MQ_TOKEN=t ") + MQCTL_BIN + " --server " + cluster_->address() +
                                             " --timeout 5 models list 2>&1"},
                       &out),
            1);
  EXPECT_NE(out.find("hint: the server speaks plaintext"), std::string::npos) << out;
}

TEST_F(BadInputTest, UnknownModelOrDatasetIsNotFound) {
  const std::string before = Snapshot();
  EXPECT_EQ(Submit("no-such-model", "calib").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Submit("mamba-tiny", "no-such-dataset").code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(Submit("mamba-tiny:99", "calib").code(), absl::StatusCode::kNotFound);
  grpc::ClientContext ctx;
  GetArtifactRequest req;
  req.set_kind(ARTIFACT_KIND_MODEL);
  req.set_ref("ghost");
  Artifact a;
  EXPECT_EQ(cluster_->registry().GetArtifact(&ctx, req, &a).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(BadInputTest, InvalidNamesAreInvalidArgument) {
  const std::string before = Snapshot();
  for (std::string name : {std::string("a/b"), std::string("../etc"), std::string(".."), std::string("a\x01" "b"),
                           std::string("a\nb"), std::string("")}) {
    EXPECT_EQ(Create(name, "data.txt", "x").status().code(), absl::StatusCode::kInvalidArgument) << name;
  }
  for (std::string path : {std::string("../escape.txt"), std::string("/abs.txt"), std::string("a//b"),
                           std::string("a\x02.txt")}) {
    EXPECT_EQ(Create("fine", path, "x").status().code(), absl::StatusCode::kInvalidArgument) << path;
  }
  EXPECT_EQ(Submit("../mamba-tiny", "calib").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Submit("mamba-tiny", "calib/x").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(BadInputTest, DuplicateVersionIsAlreadyExists) {
  auto first = Create("versioned", "data.txt", "v1", ARTIFACT_KIND_DATASET, 5);
  ASSERT_TRUE(first.ok());
  ASSERT_TRUE(Send(*first, "data.txt", 0, "v1").ok());
  ASSERT_TRUE(Commit(*first).ok());
  const std::string before = Snapshot();
  EXPECT_EQ(Create("versioned", "data.txt", "v1 again", ARTIFACT_KIND_DATASET, 5).status().code(),
            absl::StatusCode::kAlreadyExists);
  // Two uploads racing for one version: the second commit loses.
  auto a = Create("raced", "data.txt", "a", ARTIFACT_KIND_DATASET, 1);
  auto b = Create("raced", "data.txt", "b", ARTIFACT_KIND_DATASET, 1);
  ASSERT_TRUE(a.ok() && b.ok());
  ASSERT_TRUE(Send(*a, "data.txt", 0, "a").ok());
  ASSERT_TRUE(Send(*b, "data.txt", 0, "b").ok());
  EXPECT_TRUE(Commit(*a).ok());
  EXPECT_EQ(Commit(*b).code(), absl::StatusCode::kAlreadyExists);
  // mqctl reports it too, and the duplicate model upload changes nothing.
  std::string out;
  EXPECT_NE(cluster_->Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", "mamba-tiny", "--version", "1"}, &out), 0);
  EXPECT_NE(Snapshot().find("versioned"), std::string::npos);
}

TEST_F(BadInputTest, InvalidModelContentIsRejected) {
  const std::string before = Snapshot();
  CreateUploadRequest req;
  req.set_kind(ARTIFACT_KIND_MODEL);
  req.set_name("broken-model");
  std::map<std::string, std::string> files = {
      {"config.json", "{\"no_model_type\": 1}"}, {"tokenizer.json", "{}"}, {"model.safetensors", std::string(16, '\0')}};
  for (const auto& [path, content] : files) {
    auto* f = req.add_files();
    f->set_path(path);
    f->set_size(content.size());
    f->set_sha256(Sha256Hex(content));
  }
  grpc::ClientContext ctx;
  Upload upload;
  ASSERT_TRUE(cluster_->registry().CreateUpload(&ctx, req, &upload).ok());
  for (const auto& [path, content] : files) ASSERT_TRUE(Send(upload, path, 0, content).ok());
  absl::Status s = Commit(upload);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("model_type"), absl::string_view::npos);
  EXPECT_EQ(Snapshot(), before);
  // A model without tokenizer.json is refused before any byte is sent.
  req.mutable_files()->DeleteSubrange(1, 1);
  grpc::ClientContext ctx2;
  EXPECT_EQ(cluster_->registry().CreateUpload(&ctx2, req, &upload).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
}

// A dataset of whitespace only was registered and failed every job later ("fewer tokens than one
// window"): refused at commit, saying why.
TEST_F(BadInputTest, WhitespaceOnlyDatasetIsRefusedAtCommit) {
  const std::string before = Snapshot();
  const std::string blank = "\n\n   \t\r\n \n";
  auto upload = Create("blank", "data.txt", blank);
  ASSERT_TRUE(upload.ok()) << upload.status();
  ASSERT_TRUE(Send(*upload, "data.txt", 0, blank).ok());
  absl::Status s = Commit(*upload);
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("no text (only whitespace)"), absl::string_view::npos) << s;
  EXPECT_EQ(Snapshot(), before);
  // One visible character is enough to be text.
  const std::string one = "\n  x \n";
  auto ok = Create("blank", "data.txt", one);
  ASSERT_TRUE(ok.ok()) << ok.status();
  ASSERT_TRUE(Send(*ok, "data.txt", 0, one).ok());
  EXPECT_TRUE(Commit(*ok).ok());
}

TEST_F(BadInputTest, CancellingAFinishedJobIsFailedPrecondition) {
  grpc::ClientContext ctx;
  SubmitJobRequest req;
  req.mutable_spec()->set_model("mamba-tiny");
  req.mutable_spec()->set_calib_dataset("calib");
  Job job;
  ASSERT_TRUE(cluster_->jobs().SubmitJob(&ctx, req, &job).ok());
  grpc::ClientContext c1;
  CancelJobRequest cancel;
  cancel.set_job_id(job.id());
  Job cancelled;
  ASSERT_TRUE(cluster_->jobs().CancelJob(&c1, cancel, &cancelled).ok());
  EXPECT_EQ(cancelled.state(), JOB_STATE_CANCELLED);  // no worker: it was queued
  const std::string before = Snapshot();
  grpc::ClientContext c2;
  EXPECT_EQ(cluster_->jobs().CancelJob(&c2, cancel, &cancelled).error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  std::string out;
  EXPECT_EQ(cluster_->Mqctl({"jobs", "cancel", job.id()}, &out), 1);
  EXPECT_EQ(Snapshot(), before);
}

TEST_F(BadInputTest, BadSpecValuesAreInvalidArgument) {
  for (auto mutate : std::vector<std::function<void(QuantSpec*)>>{
           [](QuantSpec* s) { s->set_preset("magic"); }, [](QuantSpec* s) { s->set_bits("w2a2"); },
           [](QuantSpec* s) { s->set_num_samples(-1); }, [](QuantSpec* s) { s->set_seq_len(1 << 20); },
           [](QuantSpec* s) { s->set_output_name("x/y"); }, [](QuantSpec* s) { s->set_backend("tpu"); },
           [](QuantSpec* s) { s->set_act_percentile(0.0); }, [](QuantSpec* s) { s->set_act_percentile(101.0); },
           [](QuantSpec* s) { s->set_r1_covariance("layer7"); }, [](QuantSpec* s) { s->set_weight_clip("gptq"); },
           [](QuantSpec* s) { s->set_state_granularity("per_channel"); },
           [](QuantSpec* s) { s->set_tolerable_loss_percent(0.0); },
           [](QuantSpec* s) { s->set_tolerable_loss_percent(100.5); },
           [](QuantSpec* s) { s->set_tolerable_loss_percent(std::nan("")); }}) {
    grpc::ClientContext ctx;
    SubmitJobRequest req;
    req.mutable_spec()->set_model("mamba-tiny");
    req.mutable_spec()->set_calib_dataset("calib");
    mutate(req.mutable_spec());
    Job job;
    EXPECT_EQ(cluster_->jobs().SubmitJob(&ctx, req, &job).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }
}

// TLS with a self-signed certificate and a bearer token.
TEST(ServiceAuth, CallsWithoutTheRightTokenAreUnauthenticated) {
  TempDir dir;
  std::string out;
  int rc = RunCommand({"/usr/bin/openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                       "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                       "-keyout", dir.Sub("key.pem"), "-out", dir.Sub("cert.pem")},
                      &out);
  if (rc != 0) GTEST_SKIP() << "openssl CLI unavailable to make a test certificate";
  const int port = PickFreePort();
  const std::string addr = absl::StrCat("127.0.0.1:", port);
  ChildProcess server({MQ_SERVER_BIN, "--listen", addr, "--data-dir", dir.Sub("data"), "--tls-cert", dir.Sub("cert.pem"),
                       "--tls-key", dir.Sub("key.pem"), "--token", "s3cret"},
                      dir.Sub("server.log"));
  grpc::SslCredentialsOptions ssl;
  ssl.pem_root_certs = ReadFileOrDie(dir.Sub("cert.pem"));
  auto creds = grpc::SslCredentials(ssl);
  ASSERT_TRUE(WaitForServing(addr, absl::Seconds(20), creds)) << ReadFileOrDie(dir.Sub("server.log"));
  auto channel = grpc::CreateChannel(addr, creds);
  auto registry = RegistryService::NewStub(channel);
  auto jobs = JobService::NewStub(channel);
  ListArtifactsRequest list;
  list.set_kind(ARTIFACT_KIND_MODEL);
  ListArtifactsResponse resp;
  {
    grpc::ClientContext ctx;
    EXPECT_EQ(registry->ListArtifacts(&ctx, list, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer wrong");
    EXPECT_EQ(registry->ListArtifacts(&ctx, list, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "s3cret");  // missing the scheme
    EXPECT_EQ(registry->ListArtifacts(&ctx, list, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    GetJobRequest req;
    req.set_job_id("j-0000000000000000");
    Job job;
    EXPECT_EQ(jobs->GetJob(&ctx, req, &job).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer s3cret");
    EXPECT_TRUE(registry->ListArtifacts(&ctx, list, &resp).ok());
  }
  // mqctl with the CA and a token from the environment.
  EXPECT_EQ(RunCommand({MQCTL_BIN, "--server", addr, "--tls-ca", dir.Sub("cert.pem"), "--tls-server-name", "localhost",
                        "models", "list"},
                       &out, absl::Seconds(30), {{"MQ_TOKEN", "s3cret"}}),
            0);
  EXPECT_EQ(RunCommand({MQCTL_BIN, "--server", addr, "--tls-ca", dir.Sub("cert.pem"), "--tls-server-name", "localhost",
                        "models", "list"},
                       &out, absl::Seconds(30), {{"MQ_TOKEN", "nope"}}),
            1);
  // Plaintext clients cannot talk to the TLS server at all.
  EXPECT_NE(RunCommand({MQCTL_BIN, "--server", addr, "--insecure", "--timeout", "3", "models", "list"}, &out), 0);
}

}  // namespace
}  // namespace mq::test
