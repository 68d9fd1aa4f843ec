// Control-plane defects found by testing as a new user and an attacker would, each fixed, through a
// running server: a job's output may not become a new version of its own source model (explicitly
// or by a truncated default name), and progress values are checked where they enter.
#include <cmath>
#include <fstream>
#include <limits>

#include <gtest/gtest.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "cluster.h"
#include "mambaquant/v1/worker.grpc.pb.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

grpc::Status Submit(Cluster& cluster, const std::string& model, const std::string& output_name, Job* job) {
  SubmitJobRequest req;
  QuantSpec* spec = req.mutable_spec();
  spec->set_model(model);
  spec->set_calib_dataset("calib");
  spec->set_preset("rtn");
  spec->set_bits("w8a8");
  spec->set_output_name(output_name);
  grpc::ClientContext ctx;
  return cluster.jobs().SubmitJob(&ctx, req, job);
}

TEST(ControlPlaneDefects, AJobOutputNeverBecomesAVersionOfItsOwnSource) {
  Cluster cluster;
  cluster.StartServer();
  cluster.UploadBundled();
  Job job;
  grpc::Status s = Submit(cluster, "mamba-tiny", "mamba-tiny", &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(s.error_message().find("spec.output_name"), std::string::npos) << s.error_message();

  // A 128-character name (the longest allowed): the default output name keeps its suffix.
  const std::string long_name = std::string(128, 'm');
  ASSERT_EQ(cluster.Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", long_name}), 0);
  s = Submit(cluster, long_name, "", &job);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(job.spec().output_name(), std::string(128 - 9, 'm') + "-rtn-w8a8");
  EXPECT_NE(job.spec().output_name(), long_name);

  // A name whose own ending is that suffix: truncation would give the name back, so it is refused.
  const std::string suffixed = std::string(128 - 9, 's') + "-rtn-w8a8";
  ASSERT_EQ(cluster.Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", suffixed}), 0);
  s = Submit(cluster, suffixed, "", &job);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  // With an explicit other name it runs.
  EXPECT_TRUE(Submit(cluster, suffixed, "other", &job).ok());
}

TEST(ControlPlaneDefects, ProgressValuesAreCheckedWhereTheyEnter) {
  Cluster cluster;
  cluster.StartServer();
  auto stub = WorkerService::NewStub(grpc::CreateChannel(cluster.address(), grpc::InsecureChannelCredentials()));
  RegisterWorkerResponse reg;
  {
    grpc::ClientContext ctx;
    RegisterWorkerRequest req;
    req.set_backend("cpu");
    ASSERT_TRUE(stub->RegisterWorker(&ctx, req, &reg).ok());
  }
  auto report = [&](int stage, double stage_fraction, double fraction, double eta) {
    grpc::ClientContext ctx;
    ReportProgressRequest req;
    req.set_worker_id(reg.worker_id());
    req.set_job_id("j-0123456789abcdef");
    req.set_stage(static_cast<Stage>(stage));
    req.set_stage_fraction(stage_fraction);
    req.set_fraction(fraction);
    req.set_eta_seconds(eta);
    ReportProgressResponse resp;
    return stub->ReportProgress(&ctx, req, &resp);
  };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_EQ(report(STAGE_QUANTIZE, nan, 0.5, 10).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(STAGE_QUANTIZE, 0.5, nan, 10).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(STAGE_QUANTIZE, 0.5, -inf, 10).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(STAGE_QUANTIZE, 0.5, 0.5, inf).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(STAGE_QUANTIZE, 0.5, 0.5, nan).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(STAGE_QUANTIZE, 0.5, 0.5, 1e12).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(report(999, 0.5, 0.5, 10).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // Valid values pass the checks and meet the job lookup (this job does not exist).
  grpc::StatusCode valid = report(STAGE_QUANTIZE, 0.5, 0.5, -1).error_code();
  EXPECT_NE(valid, grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(valid, grpc::StatusCode::OK);
}

// Strings from the server reach the terminal escaped: no escape sequence, no forged line.
TEST(ControlPlaneDefects, MqctlShowsServerStringsEscaped) {
  Cluster cluster;
  cluster.StartServer();
  const std::string file = cluster.dir().Sub("t.txt");
  std::ofstream(file) << "hello\n";
  ASSERT_EQ(cluster.Mqctl({"datasets", "upload", file, "--name", "x", "--description", "a\x1b[31mred\nforged line",
                           "--label", "k=v\x1b]0;title\x07"}),
            0);
  for (const std::vector<std::string>& cmd : {std::vector<std::string>{"datasets", "get", "x"},
                                              std::vector<std::string>{"datasets", "list"}}) {
    std::string out;
    ASSERT_EQ(cluster.Mqctl(cmd, &out), 0) << out;
    EXPECT_EQ(out.find('\x1b'), std::string::npos) << cmd[1];
    EXPECT_EQ(out.find('\x07'), std::string::npos) << cmd[1];
    EXPECT_EQ(out.find("\nforged line"), std::string::npos) << cmd[1];
  }
  std::string out;
  ASSERT_EQ(cluster.Mqctl({"datasets", "get", "x"}, &out), 0);
  EXPECT_NE(out.find("description  a\\x1b[31mred\\nforged line\n"), std::string::npos) << out;
  EXPECT_NE(out.find("label        k=v\\x1b]0;title\\x07\n"), std::string::npos) << out;
}

}  // namespace
}  // namespace mq::test
