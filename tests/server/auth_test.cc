// Tokens with roles: the tokens file parser, reload, the role table against the services'
// descriptors, and a TLS server answering each role's calls (UNAUTHENTICATED without a valid
// token, PERMISSION_DENIED for the wrong role), SIGHUP reload, and --insecure with a token.
#include <signal.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <set>

#include <gtest/gtest.h>
#include <google/protobuf/descriptor.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/generic/generic_stub.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "grpc_service.grpc.pb.h"
#include "mambaquant/v1/cluster.grpc.pb.h"
#include "mambaquant/v1/inference.grpc.pb.h"
#include "mambaquant/v1/jobs.grpc.pb.h"
#include "mambaquant/v1/registry.grpc.pb.h"
#include "mambaquant/v1/worker.grpc.pb.h"
#include "rpc_roles.h"
#include "sha256.h"
#include "test_certs.h"
#include "test_support.h"
#include "token_store.h"

namespace mq::test {
namespace {

using server::ParseTokensFile;
using server::Role;
using server::TokenStore;

// A tokens-file line computed here, independently of TokensFileLine.
std::string Line(const std::string& token, const std::string& role, const std::string& name) {
  return absl::StrCat("sha256:", Sha256Hex(token), " ", role, " ", name);
}

// Mode 0600 whatever the umask: the server refuses a tokens file others can write.
void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream(path, std::ios::trunc) << content;
  std::filesystem::permissions(path, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
}

TEST(TokensFile, ParsesRolesAndNames) {
  const std::string t1 = "mqt_first", t2 = "mqt_second";
  auto parsed = ParseTokensFile(absl::StrCat("# comment\n\n", Line(t1, "admin", "alice"), "\n  ", Line(t2, "inference", "svc.a-1"),
                                             "  \n"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[0].role, Role::kAdmin);
  EXPECT_EQ((*parsed)[0].name, "alice");
  EXPECT_EQ((*parsed)[1].role, Role::kInference);
  EXPECT_EQ((*parsed)[1].name, "svc.a-1");
  // The digest is the SHA-256 of the token (checked against the common hasher's hex).
  std::string hex;
  for (uint8_t b : (*parsed)[0].digest) absl::StrAppend(&hex, absl::Hex(b, absl::kZeroPad2));
  EXPECT_EQ(hex, Sha256Hex(t1));
}

TEST(TokensFile, EveryFieldIsChecked) {
  const std::string good = Line("tok", "operator", "bob");
  std::string upper = good;
  upper[8] = 'A';  // upper-case hex
  const std::vector<std::pair<std::string, std::string>> bad = {
      {"sha1:" + Sha256Hex("x") + " admin a", "digest"},
      {"sha256:" + Sha256Hex("x").substr(0, 63) + " admin a", "digest"},
      {"sha256:" + Sha256Hex("x").substr(0, 63) + "g admin a", "digest"},
      {upper, "digest"},
      {Line("tok", "root", "bob"), "role"},
      {Line("tok", "admin", "b b"), "want"},
      {Line("tok", "admin", "bob\x1b[2J"), "name"},
      {Line("tok", "admin", std::string(65, 'n')), "name"},
      {Line("tok", "admin", "bob") + " extra", "want"},
      {good + "\n" + Line("tok", "admin", "carol"), "twice"},
      {good + "\n" + Line("other", "admin", "bob"), "twice"},
  };
  for (const auto& [content, why] : bad) {
    auto parsed = ParseTokensFile(content);
    ASSERT_FALSE(parsed.ok()) << content;
    EXPECT_NE(parsed.status().message().find("line "), std::string::npos) << parsed.status();
    EXPECT_NE(parsed.status().message().find(why), std::string::npos) << parsed.status();
  }
  EXPECT_FALSE(ParseTokensFile(std::string(server::kMaxTokensFileBytes + 1, '#')).ok());
}

TEST(TokenStoreTest, ReloadSwapsAndABrokenFileKeepsTheOldSet) {
  TempDir dir;
  const std::string path = dir.Sub("tokens");
  WriteFile(path, Line("old-token", "operator", "old"));
  auto store = TokenStore::Create(path, {server::EntryForSecret("flag", Role::kAdmin, "flag-token")});
  ASSERT_TRUE(store.ok()) << store.status();
  EXPECT_EQ((*store)->Find("old-token")->role, Role::kOperator);
  EXPECT_EQ((*store)->Find("flag")->role, Role::kAdmin);
  EXPECT_FALSE((*store)->Find("old-token-").has_value());
  EXPECT_FALSE((*store)->Find("").has_value());

  WriteFile(path, Line("new-token", "worker", "new") + "\nnot a line\n");
  EXPECT_FALSE((*store)->Reload().ok());
  EXPECT_TRUE((*store)->Find("old-token").has_value());
  EXPECT_FALSE((*store)->Find("new-token").has_value());

  WriteFile(path, Line("new-token", "worker", "new"));
  ASSERT_TRUE((*store)->Reload().ok());
  EXPECT_FALSE((*store)->Find("old-token").has_value());
  EXPECT_EQ((*store)->Find("new-token")->role, Role::kWorker);
  EXPECT_EQ((*store)->Find("new-token")->name, "new");
  EXPECT_TRUE((*store)->Find("flag").has_value());  // the flags' tokens stay
}

// A file others can write (anyone could add an admin token) and an empty file (truncated mid-save:
// every client would be locked out) are refused, at start and on reload, where the set in use stays.
TEST(TokenStoreTest, AFileOthersCanWriteAndAnEmptyFileAreRefused) {
  TempDir dir;
  const std::string path = dir.Sub("tokens");
  WriteFile(path, Line("tok", "admin", "adm"));
  auto store = TokenStore::Create(path, {});
  ASSERT_TRUE(store.ok()) << store.status();
  std::filesystem::permissions(path, std::filesystem::perms::group_write, std::filesystem::perm_options::add);
  absl::Status s = (*store)->Reload();
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition) << s;
  EXPECT_NE(s.message().find("mode 0620"), absl::string_view::npos) << s;
  EXPECT_TRUE((*store)->Find("tok").has_value());
  EXPECT_FALSE(TokenStore::Create(path, {}).ok());
  WriteFile(path, "# all lines removed\n");
  s = (*store)->Reload();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
  EXPECT_NE(s.message().find("holds no token"), absl::string_view::npos) << s;
  EXPECT_TRUE((*store)->Find("tok").has_value());
  EXPECT_FALSE(TokenStore::Create(path, {}).ok());
}

TEST(TokenStoreTest, MintedTokensAreDistinctAndTheirLineParses) {
  auto a = server::MintToken(), b = server::MintToken();
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_NE(*a, *b);
  EXPECT_EQ(a->size(), 68u);
  auto parsed = ParseTokensFile(server::TokensFileLine(*a, Role::kInference, "svc"));
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(server::TokensFileLine(*a, Role::kInference, "svc"), Line(*a, "inference", "svc"));
}

// The table names every method of the services the server registers (a method it lacks would be
// denied to everyone). It may name a method a proto does not have yet: that one is inert.
TEST(RoleTable, CoversEveryMethodOfEveryService) {
  std::set<std::string> from_services;
  // The generated pool loads a proto file when one of its types is first used.
  for (const auto* d : {mambaquant::v1::ListArtifactsRequest::descriptor(), mambaquant::v1::SubmitJobRequest::descriptor(),
                        mambaquant::v1::HeartbeatRequest::descriptor(), mambaquant::v1::ScoreRequest::descriptor(),
                        mambaquant::v1::ListWorkersRequest::descriptor(), inference::ServerLiveRequest::descriptor()}) {
    ASSERT_NE(d, nullptr);
  }
  const auto* pool = google::protobuf::DescriptorPool::generated_pool();
  for (const char* name : {"mambaquant.v1.RegistryService", "mambaquant.v1.JobService", "mambaquant.v1.WorkerService",
                           "mambaquant.v1.InferenceService", "mambaquant.v1.ClusterService", "inference.GRPCInferenceService"}) {
    const auto* service = pool->FindServiceByName(name);
    ASSERT_NE(service, nullptr) << name;
    for (int i = 0; i < service->method_count(); ++i) {
      from_services.insert(absl::StrCat("/", name, "/", service->method(i)->name()));
    }
  }
  std::set<std::string> in_table;
  for (const std::string& m : server::MethodsInRoleTable()) {
    if (m.rfind("/grpc.", 0) != 0) in_table.insert(m);  // reflection and health are gRPC's own
  }
  for (const std::string& m : from_services) EXPECT_EQ(in_table.count(m), 1u) << m << " is missing from the role table";
  EXPECT_GE(in_table.size(), from_services.size());
  EXPECT_FALSE(server::AccessFor("/mambaquant.v1.RegistryService/NoSuchMethod").has_value());
  EXPECT_TRUE(server::AccessFor("/grpc.health.v1.Health/Check")->open);
  // Spot checks of the policy itself.
  auto roles = [](const char* m) { return server::AccessFor(m)->roles; };
  EXPECT_EQ(roles("/mambaquant.v1.RegistryService/DeleteArtifact"), server::RoleBit(Role::kAdmin));
  EXPECT_EQ(roles("/mambaquant.v1.JobService/SubmitJob"), server::RoleBit(Role::kAdmin) | server::RoleBit(Role::kOperator));
  EXPECT_EQ(roles("/mambaquant.v1.InferenceService/Generate"), server::RoleBit(Role::kAdmin) | server::RoleBit(Role::kInference));
  EXPECT_EQ(roles("/mambaquant.v1.WorkerService/FinishJob"), server::RoleBit(Role::kWorker));
}

// ---- a TLS server with a tokens file ----

struct Tokens {
  std::string admin, op, inference, worker;
};

class AuthServer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!MakeCa(dir_.path(), "ca", &ca_) || !MakeLeaf(dir_.path(), "server", "localhost", ca_, &server_cert_)) {
      GTEST_SKIP() << "openssl CLI unavailable";
    }
    for (std::string* t : {&tokens_.admin, &tokens_.op, &tokens_.inference, &tokens_.worker}) *t = *server::MintToken();
    WriteFile(dir_.Sub("tokens"), absl::StrCat(Line(tokens_.admin, "admin", "adm"), "\n", Line(tokens_.op, "operator", "op"), "\n",
                                               Line(tokens_.inference, "inference", "inf"), "\n",
                                               Line(tokens_.worker, "worker", "wrk"), "\n"));
    address_ = absl::StrCat("127.0.0.1:", PickFreePort());
    server_ = std::make_unique<ChildProcess>(
        std::vector<std::string>{MQ_SERVER_BIN, "--listen", address_, "--data-dir", dir_.Sub("data"), "--tls-cert",
                                 server_cert_.cert, "--tls-key", server_cert_.key, "--tokens-file", dir_.Sub("tokens")},
        dir_.Sub("server.log"));
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ReadFileOrDie(ca_.cert);
    creds_ = grpc::SslCredentials(ssl);
    ASSERT_TRUE(WaitForServing(address_, absl::Seconds(20), creds_)) << ReadFileOrDie(dir_.Sub("server.log"));
    grpc::ChannelArguments args;
    args.SetSslTargetNameOverride("localhost");
    channel_ = grpc::CreateCustomChannel(address_, creds_, args);
  }

  // The status code of a unary call of `method` (an empty request) through a generic stub.
  grpc::StatusCode Call(const std::string& method, const std::string& token) {
    grpc::GenericStub stub(channel_);
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!token.empty()) ctx.AddMetadata("authorization", "Bearer " + token);
    grpc::Slice empty("");
    grpc::ByteBuffer req(&empty, 1), resp;
    std::mutex mu;
    std::condition_variable cv;
    bool done = false;
    grpc::Status status;
    stub.UnaryCall(&ctx, method, grpc::StubOptions(), &req, &resp, [&](grpc::Status s) {
      std::lock_guard<std::mutex> l(mu);
      status = s;
      done = true;
      cv.notify_all();
    });
    std::unique_lock<std::mutex> l(mu);
    cv.wait(l, [&] { return done; });
    return status.error_code();
  }

  TempDir dir_;
  CertFiles ca_, server_cert_;
  Tokens tokens_;
  std::string address_;
  std::unique_ptr<ChildProcess> server_;
  std::shared_ptr<grpc::ChannelCredentials> creds_;
  std::shared_ptr<grpc::Channel> channel_;
};

bool Denied(grpc::StatusCode c) { return c == grpc::StatusCode::PERMISSION_DENIED || c == grpc::StatusCode::UNAUTHENTICATED; }
// Past authorization: the handler answered (an empty ListArtifacts request is INVALID_ARGUMENT).
bool Admitted(grpc::StatusCode c) { return !Denied(c) && c != grpc::StatusCode::UNAVAILABLE; }

TEST_F(AuthServer, EachRoleReachesOnlyItsMethods) {
  const std::string kList = "/mambaquant.v1.RegistryService/ListArtifacts";
  const std::string kDelete = "/mambaquant.v1.RegistryService/DeleteArtifact";
  const std::string kSubmit = "/mambaquant.v1.JobService/SubmitJob";
  const std::string kScore = "/mambaquant.v1.InferenceService/Score";
  const std::string kModelReady = "/inference.GRPCInferenceService/ModelReady";
  const std::string kLoad = "/inference.GRPCInferenceService/RepositoryModelLoad";
  const std::string kHeartbeat = "/mambaquant.v1.WorkerService/Heartbeat";
  const std::string kWorkers = "/mambaquant.v1.ClusterService/ListWorkers";
  const std::string kReflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo";
  // Without a token or with an unknown one: UNAUTHENTICATED, on every method including reflection.
  for (const std::string& m : {kList, kDelete, kSubmit, kScore, kModelReady, kHeartbeat, kReflection}) {
    EXPECT_EQ(Call(m, ""), grpc::StatusCode::UNAUTHENTICATED) << m;
    EXPECT_EQ(Call(m, tokens_.admin + "x"), grpc::StatusCode::UNAUTHENTICATED) << m;
  }
  // A method missing from the table: UNAUTHENTICATED without a valid token (nothing learned about
  // which methods exist), UNIMPLEMENTED past it, as an unauthenticated server answers (reflection
  // clients fall back from v1 to v1alpha on it).
  for (const std::string m : {"/mambaquant.v1.RegistryService/NoSuchMethod", "/no.Such/Service",
                              "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"}) {
    EXPECT_EQ(Call(m, ""), grpc::StatusCode::UNAUTHENTICATED) << m;
    EXPECT_EQ(Call(m, tokens_.admin + "x"), grpc::StatusCode::UNAUTHENTICATED) << m;
    EXPECT_EQ(Call(m, tokens_.admin), grpc::StatusCode::UNIMPLEMENTED) << m;
    EXPECT_EQ(Call(m, tokens_.inference), grpc::StatusCode::UNIMPLEMENTED) << m;
  }

  struct Case {
    std::string method;
    std::set<std::string> allowed;  // role names
  };
  const std::vector<Case> cases = {
      {kList, {"admin", "operator"}},     {kDelete, {"admin"}},       {kSubmit, {"admin", "operator"}},
      {kScore, {"admin", "inference"}},   {kModelReady, {"admin", "inference"}}, {kLoad, {"admin"}},
      {kHeartbeat, {"worker"}},           {kWorkers, {"admin", "operator"}},
      {kReflection, {"admin", "operator", "inference"}},
  };
  const std::vector<std::pair<std::string, std::string>> roles = {
      {"admin", tokens_.admin}, {"operator", tokens_.op}, {"inference", tokens_.inference}, {"worker", tokens_.worker}};
  for (const Case& c : cases) {
    for (const auto& [role, token] : roles) {
      grpc::StatusCode code = Call(c.method, token);
      if (c.allowed.count(role)) {
        // Past authorization the handler answers for itself (an empty request is usually invalid).
        EXPECT_TRUE(Admitted(code)) << role << " " << c.method << " got " << code;
      } else {
        EXPECT_EQ(code, grpc::StatusCode::PERMISSION_DENIED) << role << " " << c.method;
      }
    }
  }
  // Health stays open.
  EXPECT_EQ(Call("/grpc.health.v1.Health/Check", ""), grpc::StatusCode::OK);
  // No token reaches the log.
  const std::string log = ReadFileOrDie(dir_.Sub("server.log"));
  for (const auto& [role, token] : roles) EXPECT_EQ(log.find(token), std::string::npos) << role;
}

TEST_F(AuthServer, SighupReloadsTheTokensFileAndABrokenFileKeepsTheOldOnes) {
  const std::string kList = "/mambaquant.v1.RegistryService/ListArtifacts";
  // mqctl mints a token; its line goes in the file; SIGHUP makes it valid.
  std::string out;
  ASSERT_EQ(RunCommand({MQCTL_BIN, "tokens", "mint", "--role", "operator", "--name", "new-op"}, &out), 0) << out;
  const std::string token = out.substr(out.find("token: ") + 7, 68);
  const size_t at = out.find("sha256:");
  ASSERT_NE(at, std::string::npos) << out;
  const std::string line = out.substr(at, out.find('\n', at) - at);
  EXPECT_EQ(line, Line(token, "operator", "new-op"));
  EXPECT_EQ(Call(kList, token), grpc::StatusCode::UNAUTHENTICATED);
  // Rotation: the new operator token replaces the old one.
  WriteFile(dir_.Sub("tokens"), absl::StrCat(Line(tokens_.admin, "admin", "adm"), "\n", line, "\n"));
  server_->Signal(SIGHUP);
  absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (!Admitted(Call(kList, token)) && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_TRUE(Admitted(Call(kList, token)));
  EXPECT_EQ(Call(kList, tokens_.op), grpc::StatusCode::UNAUTHENTICATED);  // revoked

  // A broken file: the server keeps the tokens it had and says why in its log.
  WriteFile(dir_.Sub("tokens"), "sha256:nothex admin x\n");
  server_->Signal(SIGHUP);
  deadline = absl::Now() + absl::Seconds(10);
  while (ReadFileOrDie(dir_.Sub("server.log")).find("reload failed") == std::string::npos && absl::Now() < deadline) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string log = ReadFileOrDie(dir_.Sub("server.log"));
  EXPECT_NE(log.find("tokens file reload failed"), std::string::npos) << log;
  EXPECT_NE(log.find("line 1"), std::string::npos) << log;
  EXPECT_TRUE(Admitted(Call(kList, token)));
  EXPECT_TRUE(server_->running());
  EXPECT_EQ(log.find(token), std::string::npos);
}

// --insecure with a token was silently ignored; it is now refused at start.
TEST(AuthFlags, InsecureWithATokenIsRefused) {
  TempDir dir;
  const std::string addr = absl::StrCat("127.0.0.1:", PickFreePort());
  for (const std::vector<std::string>& extra :
       {std::vector<std::string>{"--token", "s3cret"}, std::vector<std::string>{"--worker-token", "w"},
        std::vector<std::string>{"--tokens-file", dir.Sub("none")}}) {
    std::vector<std::string> argv = {MQ_SERVER_BIN, "--listen", addr, "--data-dir", dir.Sub("data"), "--insecure"};
    argv.insert(argv.end(), extra.begin(), extra.end());
    ChildProcess server(argv, dir.Sub("server.log"));
    EXPECT_EQ(server.Wait(absl::Seconds(20)), 1) << extra[0];
  }
  EXPECT_NE(ReadFileOrDie(dir.Sub("server.log")).find("--insecure disables authentication"), std::string::npos);
  // A TLS server with neither tokens file nor token refuses to start too.
  CertFiles ca, cert;
  if (!MakeCa(dir.path(), "ca", &ca) || !MakeLeaf(dir.path(), "server", "localhost", ca, &cert)) GTEST_SKIP();
  ChildProcess server({MQ_SERVER_BIN, "--listen", addr, "--data-dir", dir.Sub("data"), "--tls-cert", cert.cert, "--tls-key",
                       cert.key},
                      dir.Sub("server2.log"), {{"MQ_TOKEN", ""}});
  EXPECT_EQ(server.Wait(absl::Seconds(20)), 1);
}

}  // namespace
}  // namespace mq::test
