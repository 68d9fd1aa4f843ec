// Mutual TLS on the worker port: only certificates signed by --worker-ca get in, only the worker
// API is served there, each worker id is bound to the certificate that registered it (another
// worker's heartbeats, progress, results and Serve stream are PERMISSION_DENIED), the public port
// refuses the worker API, a real mq-worker joins with --client-cert, and certificates are reloaded
// without a restart.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "health_probe.grpc.pb.h"
#include "mambaquant/v1/cluster.grpc.pb.h"
#include "mambaquant/v1/registry.grpc.pb.h"
#include "mambaquant/v1/worker.grpc.pb.h"
#include "sha256.h"
#include "test_certs.h"
#include "test_support.h"

namespace mq::test {
namespace {

using namespace mambaquant::v1;  // NOLINT

std::string Line(const std::string& token, const std::string& role, const std::string& name) {
  return absl::StrCat("sha256:", Sha256Hex(token), " ", role, " ", name);
}

class MtlsServer : public ::testing::Test {
 protected:
  void SetUp() override {
    const std::string d = dir_.path();
    if (!MakeCa(d, "ca", &ca_) || !MakeLeaf(d, "server", "localhost", ca_, &server_) ||
        !MakeLeaf(d, "worker-a", "worker-a", ca_, &worker_a_) || !MakeLeaf(d, "worker-b", "worker-b", ca_, &worker_b_) ||
        !MakeLeaf(d, "worker-c", "worker-c", ca_, &worker_c_) || !MakeCa(d, "rogue-ca", &rogue_ca_) ||
        !MakeLeaf(d, "rogue", "worker-a", rogue_ca_, &rogue_)) {
      GTEST_SKIP() << "openssl CLI unavailable";
    }
    std::ofstream(dir_.Sub("tokens")) << Line("op-token", "operator", "op") << "\n" << Line("worker-token", "worker", "wrk") << "\n"
                                      << Line("admin-token", "admin", "adm") << "\n";
    // 0600 whatever the umask: the server refuses a tokens file others can write.
    std::filesystem::permissions(dir_.Sub("tokens"), std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    // The worker CA in a file of its own, so a test can replace it without touching the server's CA.
    std::filesystem::copy_file(ca_.cert, dir_.Sub("worker-ca.pem"));
    public_ = absl::StrCat("127.0.0.1:", PickFreePort());
    worker_port_ = absl::StrCat("127.0.0.1:", PickFreePort());
    StartServer();
  }

  // Starts the server (again, after Kill: the same ports and data directory).
  void StartServer() {
    server_proc_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{MQ_SERVER_BIN, "--listen", public_, "--worker-listen", worker_port_, "--worker-ca", dir_.Sub("worker-ca.pem"),
                                 "--data-dir", dir_.Sub("data"), "--tls-cert", server_.cert, "--tls-key", server_.key,
                                 "--tokens-file", dir_.Sub("tokens"), "--cert-reload-seconds", "1"},
        dir_.Sub("server.log"));
    ASSERT_TRUE(WaitForServing(public_, absl::Seconds(20), Creds(ca_, nullptr))) << ReadFileOrDie(dir_.Sub("server.log"));
  }

  // TLS trusting `trust`, presenting `client` when non-null.
  static std::shared_ptr<grpc::ChannelCredentials> Creds(const CertFiles& trust, const CertFiles* client) {
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(trust.cert);
    if (client != nullptr) {
      ssl.pem_cert_chain = ReadFileOrDie(client->cert);
      ssl.pem_private_key = ReadFileOrDie(client->key);
    }
    return grpc::SslCredentials(ssl);
  }
  std::unique_ptr<WorkerService::Stub> WorkerStub(const CertFiles* client, const CertFiles* trust = nullptr,
                                                  const std::string& target = "") {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    return WorkerService::NewStub(
        grpc::CreateCustomChannel(target.empty() ? worker_port_ : target, Creds(trust ? *trust : ca_, client), args));
  }
  static void Deadline(grpc::ClientContext* ctx) {
    ctx->set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  }
  grpc::StatusCode Heartbeat(WorkerService::Stub& stub, const std::string& id) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    HeartbeatRequest req;
    req.set_worker_id(id);
    HeartbeatResponse resp;
    return stub.Heartbeat(&ctx, req, &resp).error_code();
  }
  absl::StatusOr<std::string> Register(WorkerService::Stub& stub, const std::string& name) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    RegisterWorkerRequest req;
    req.set_name(name);
    req.set_backend("cpu");
    RegisterWorkerResponse resp;
    grpc::Status s = stub.RegisterWorker(&ctx, req, &resp);
    if (!s.ok()) return absl::Status(static_cast<absl::StatusCode>(s.error_code()), s.error_message());
    return resp.worker_id();
  }

  TempDir dir_;
  CertFiles ca_, server_, worker_a_, worker_b_, worker_c_, rogue_ca_, rogue_;
  std::string public_, worker_port_;
  std::unique_ptr<ChildProcess> server_proc_;
};

TEST_F(MtlsServer, OnlyCaSignedWorkersGetInAndEachWorkerIdIsBoundToItsCertificate) {
  auto a = WorkerStub(&worker_a_);
  auto b = WorkerStub(&worker_b_);
  auto id_a = Register(*a, "a");
  ASSERT_TRUE(id_a.ok()) << id_a.status() << ReadFileOrDie(dir_.Sub("server.log"));
  auto id_b = Register(*b, "b");
  ASSERT_TRUE(id_b.ok()) << id_b.status();
  EXPECT_EQ(Heartbeat(*a, *id_a), grpc::StatusCode::OK);
  EXPECT_EQ(Heartbeat(*b, *id_b), grpc::StatusCode::OK);

  // Worker b's certificate cannot act as worker a: heartbeat, re-register with a's id, report
  // progress, start or finish a result, leave, or open a's Serve stream.
  EXPECT_EQ(Heartbeat(*b, *id_a), grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    RegisterWorkerRequest req;
    req.set_worker_id(*id_a);
    req.set_backend("cpu");
    RegisterWorkerResponse resp;
    EXPECT_EQ(b->RegisterWorker(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ReportProgressRequest req;
    req.set_worker_id(*id_a);
    req.set_job_id("j-0123456789abcdef");
    ReportProgressResponse resp;
    EXPECT_EQ(b->ReportProgress(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    FinishJobRequest req;
    req.set_worker_id(*id_a);
    req.set_job_id("j-0123456789abcdef");
    req.set_outcome(JOB_STATE_SUCCEEDED);
    req.set_report_json("{\"forged\": true}");
    FinishJobResponse resp;
    EXPECT_EQ(b->FinishJob(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    StartResultUploadRequest req;
    req.set_worker_id(*id_a);
    req.set_job_id("j-0123456789abcdef");
    Upload resp;
    EXPECT_EQ(b->StartResultUpload(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    auto stream = b->Serve(&ctx);
    ServeUp up;
    up.mutable_hello()->set_worker_id(*id_a);
    stream->Write(up);
    stream->WritesDone();
    EXPECT_EQ(stream->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    DeregisterRequest req;
    req.set_worker_id(*id_a);
    DeregisterResponse resp;
    EXPECT_EQ(b->Deregister(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(Heartbeat(*a, *id_a), grpc::StatusCode::OK);  // a is untouched

  // A certificate that registered no worker reads no blob.
  {
    auto c = WorkerStub(&worker_c_);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    FetchBlobRequest req;
    req.set_sha256(Sha256Hex("x"));
    auto reader = c->FetchBlob(&ctx, req);
    FileChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  // A registered one gets past identity to the blob lookup (NOT_FOUND for an unknown digest).
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    FetchBlobRequest req;
    req.set_sha256(Sha256Hex("x"));
    auto reader = a->FetchBlob(&ctx, req);
    FileChunk chunk;
    while (reader->Read(&chunk)) {
    }
    EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::NOT_FOUND);
  }

  // No certificate, or one from another CA (even with the same common name): no handshake.
  auto none = WorkerStub(nullptr);
  EXPECT_EQ(Heartbeat(*none, *id_a), grpc::StatusCode::UNAVAILABLE);
  auto rogue = WorkerStub(&rogue_);
  EXPECT_EQ(Heartbeat(*rogue, *id_a), grpc::StatusCode::UNAVAILABLE);

  // The worker port serves nothing but the worker API (and health).
  {
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    auto channel = grpc::CreateCustomChannel(worker_port_, Creds(ca_, &worker_a_), args);
    auto registry = RegistryService::NewStub(channel);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ListArtifactsRequest req;
    ListArtifactsResponse resp;
    EXPECT_EQ(registry->ListArtifacts(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
    auto health = grpc::health::v1::Health::NewStub(channel);
    grpc::ClientContext hctx;
    Deadline(&hctx);
    grpc::health::v1::HealthCheckResponse hresp;
    EXPECT_TRUE(health->Check(&hctx, grpc::health::v1::HealthCheckRequest(), &hresp).ok());
  }
  // The public port refuses the worker API even with a worker token.
  {
    auto pub = WorkerStub(nullptr, &ca_, public_);
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ctx.AddMetadata("authorization", "Bearer worker-token");
    HeartbeatRequest req;
    req.set_worker_id(*id_a);
    HeartbeatResponse resp;
    EXPECT_EQ(pub->Heartbeat(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
}

// A worker reads the files of registered versions, not the bytes of an upload still open.
// The bindings are in the server's database: after a restart (SIGKILL, nothing flushed at exit)
// another certificate is still refused a bound id, even as the first call that names it.
TEST_F(MtlsServer, WorkerIdsStayBoundToTheirCertificateAcrossARestart) {
  auto a = WorkerStub(&worker_a_);
  auto id_a = Register(*a, "a");
  ASSERT_TRUE(id_a.ok()) << id_a.status() << ReadFileOrDie(dir_.Sub("server.log"));
  server_proc_->Kill();
  StartServer();
  auto a2 = WorkerStub(&worker_a_);
  auto b2 = WorkerStub(&worker_b_);
  EXPECT_EQ(Heartbeat(*b2, *id_a), grpc::StatusCode::PERMISSION_DENIED);
  {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    RegisterWorkerRequest req;
    req.set_worker_id(*id_a);
    req.set_backend("cpu");
    RegisterWorkerResponse resp;
    EXPECT_EQ(b2->RegisterWorker(&ctx, req, &resp).error_code(), grpc::StatusCode::PERMISSION_DENIED);
  }
  EXPECT_EQ(Heartbeat(*a2, *id_a), grpc::StatusCode::OK);
}

TEST_F(MtlsServer, WorkersReadOnlyBlobsOfRegisteredVersions) {
  auto a = WorkerStub(&worker_a_);
  ASSERT_TRUE(Register(*a, "a").ok());
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto registry = RegistryService::NewStub(grpc::CreateCustomChannel(public_, Creds(ca_, nullptr), args));
  const std::string text = "private text\n";
  Upload upload;
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer admin-token");
    CreateUploadRequest req;
    req.set_kind(ARTIFACT_KIND_DATASET);
    req.set_name("d");
    auto* f = req.add_files();
    f->set_path("d.txt");
    f->set_size(text.size());
    f->set_sha256(Sha256Hex(text));
    ASSERT_TRUE(registry->CreateUpload(&ctx, req, &upload).ok());
  }
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer admin-token");
    UploadChunksResponse resp;
    auto writer = registry->UploadChunks(&ctx, &resp);
    UploadChunk chunk;
    chunk.set_upload_id(upload.upload_id());
    chunk.set_path("d.txt");
    chunk.set_data(text);
    ASSERT_TRUE(writer->Write(chunk));
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  auto fetch = [&](std::string* out) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    FetchBlobRequest req;
    req.set_sha256(Sha256Hex(text));
    auto reader = a->FetchBlob(&ctx, req);
    FileChunk chunk;
    out->clear();
    while (reader->Read(&chunk)) *out += chunk.data();
    return reader->Finish().error_code();
  };
  std::string got;
  EXPECT_EQ(fetch(&got), grpc::StatusCode::NOT_FOUND);  // the blob exists, but no version has it yet
  {
    grpc::ClientContext ctx;
    ctx.AddMetadata("authorization", "Bearer admin-token");
    CommitUploadRequest req;
    req.set_upload_id(upload.upload_id());
    Artifact artifact;
    ASSERT_TRUE(registry->CommitUpload(&ctx, req, &artifact).ok());
  }
  EXPECT_EQ(fetch(&got), grpc::StatusCode::OK);
  EXPECT_EQ(got, text);
}

TEST_F(MtlsServer, AWorkerJoinsWithItsClientCertificate) {
  ChildProcess worker({MQ_WORKER_BIN, "--server", worker_port_, "--listen", absl::StrCat("127.0.0.1:", PickFreePort()), "--backend",
                       "cpu", "--cache-dir", dir_.Sub("cache"), "--tls-ca", ca_.cert, "--tls-server-name", "localhost",
                       "--client-cert", worker_a_.cert, "--client-key", worker_a_.key, "--name", "mtls-worker"},
                      dir_.Sub("worker.log"), {{"MQ_TOKEN", ""}, {"MQ_WORKER_TOKEN", ""}});
  grpc::ChannelArguments args;
  args.SetSslTargetNameOverride("localhost");
  auto cluster = ClusterService::NewStub(grpc::CreateCustomChannel(public_, Creds(ca_, nullptr), args));
  ListWorkersResponse resp;
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (absl::Now() < deadline) {
    grpc::ClientContext ctx;
    Deadline(&ctx);
    ctx.AddMetadata("authorization", "Bearer op-token");
    ASSERT_TRUE(cluster->ListWorkers(&ctx, ListWorkersRequest(), &resp).ok());
    if (resp.workers_size() == 1 && resp.workers(0).inference_connected()) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  ASSERT_EQ(resp.workers_size(), 1) << ReadFileOrDie(dir_.Sub("worker.log"));
  EXPECT_EQ(resp.workers(0).name(), "mtls-worker");
  EXPECT_TRUE(resp.workers(0).inference_connected()) << ReadFileOrDie(dir_.Sub("worker.log"));
  EXPECT_TRUE(worker.running());
}

TEST_F(MtlsServer, ReplacedCertificatesAreServedWithoutARestart) {
  CertFiles ca2, server2;
  ASSERT_TRUE(MakeCa(dir_.path(), "ca2", &ca2));
  ASSERT_TRUE(MakeLeaf(dir_.path(), "server2", "localhost", ca2, &server2));
  // Clients trusting only the new CA fail until the files are replaced.
  EXPECT_FALSE(WaitForServing(public_, absl::Seconds(1), Creds(ca2, nullptr)));
  // Replace by rename (atomic), key first: the watcher never pairs a new certificate with an old key
  // for long, and a mismatched pair is skipped until the next read.
  std::filesystem::copy_file(server2.key, server_.key + ".new");
  std::filesystem::copy_file(server2.cert, server_.cert + ".new");
  std::filesystem::rename(server_.key + ".new", server_.key);
  std::filesystem::rename(server_.cert + ".new", server_.cert);
  EXPECT_TRUE(WaitForServing(public_, absl::Seconds(20), Creds(ca2, nullptr))) << ReadFileOrDie(dir_.Sub("server.log"));
  EXPECT_TRUE(server_proc_->running());
}

TEST_F(MtlsServer, AReplacedWorkerCaIsTrustedWithoutARestart) {
  CertFiles ca3, worker_new;
  ASSERT_TRUE(MakeCa(dir_.path(), "ca3", &ca3));
  ASSERT_TRUE(MakeLeaf(dir_.path(), "worker-new", "worker-new", ca3, &worker_new));
  EXPECT_FALSE(Register(*WorkerStub(&worker_new), "new").ok());  // not trusted yet
  std::filesystem::copy_file(ca3.cert, dir_.Sub("worker-ca.pem.new"));
  std::filesystem::rename(dir_.Sub("worker-ca.pem.new"), dir_.Sub("worker-ca.pem"));
  absl::Time deadline = absl::Now() + absl::Seconds(20);
  bool joined = false;
  while (!joined && absl::Now() < deadline) {
    joined = Register(*WorkerStub(&worker_new), "new").ok();  // a fresh channel: a new handshake
    if (!joined) absl::SleepFor(absl::Milliseconds(200));
  }
  EXPECT_TRUE(joined) << ReadFileOrDie(dir_.Sub("server.log"));
  // Certificates of the replaced CA no longer get in.
  EXPECT_FALSE(Register(*WorkerStub(&worker_a_), "a").ok());
}

}  // namespace
}  // namespace mq::test
