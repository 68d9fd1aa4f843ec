// Control-plane defects found by testing as a new user and an attacker would, each fixed, through a
// running server: a job's output may not become a new version of its own source model (explicitly
// or by a truncated default name), and progress values are checked where they enter.
#include <signal.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include <gtest/gtest.h>
#include <grpcpp/create_channel.h>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include <nlohmann/json.hpp>

#include "cluster.h"
#include "sha256.h"
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

// Ctrl-C during `mqctl datasets upload` prints the --resume to add; the same command with it
// finishes the upload from where it stopped, and repeating it after the commit reports the version.
TEST(ControlPlaneDefects, AnInterruptedUploadSaysHowToResume) {
  Cluster cluster;
  cluster.StartServer();
  const std::string file = cluster.dir().Sub("big.txt");
  {
    std::ofstream out(file);
    const std::string line(1023, 'a');
    for (int i = 0; i < 128 * 1024; ++i) out << line << '\n';  // 128 MiB of text
  }
  const std::vector<std::string> upload = {MQCTL_BIN, "--server", cluster.address(), "--insecure", "datasets", "upload", file,
                                           "--name", "big"};
  ChildProcess mqctl(upload, cluster.dir().Sub("mqctl.log"));
  // Interrupt once the server has the first bytes (a partial file in its store).
  const std::string partial_dir = cluster.dir().Sub("data") + "/partial";
  absl::Time deadline = absl::Now() + absl::Seconds(30);
  bool started = false;
  while (!started && absl::Now() < deadline && mqctl.running()) {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator(partial_dir, ec)) {
      if (e.is_regular_file(ec) && e.file_size(ec) > 0) started = true;
    }
    if (!started) absl::SleepFor(absl::Milliseconds(2));
  }
  ASSERT_TRUE(started) << ReadFileOrDie(cluster.dir().Sub("mqctl.log"));
  mqctl.Signal(SIGINT);
  EXPECT_EQ(mqctl.Wait(absl::Seconds(20)), 130);
  const std::string log = ReadFileOrDie(cluster.dir().Sub("mqctl.log"));
  const size_t at = log.find("  --resume ");
  ASSERT_NE(at, std::string::npos) << log;
  const std::string id = log.substr(at + 11, log.find('\n', at) - at - 11);
  ASSERT_EQ(id.size(), 32u) << log;
  // The same command with --resume finishes it.
  std::vector<std::string> resume = upload;
  resume.insert(resume.end(), {"--resume", id});
  std::string out;
  ASSERT_EQ(RunCommand(resume, &out), 0) << out;
  EXPECT_NE(out.find("dataset big:1 uploaded (128.0 MiB"), std::string::npos) << out;
  // Again after the commit: the commit is idempotent, so it reports the same version.
  ASSERT_EQ(RunCommand(resume, &out), 0) << out;
  EXPECT_NE(out.find("dataset big:1 uploaded"), std::string::npos) << out;
}

// `--resume` with other local files than the upload was started with once sent them anyway: another
// name failed with "INTERNAL: no local file for ...", other content was sent in full, failed the
// digest (DATA_LOSS discards the server's valid bytes of that file) and still said to resume. Now
// the local files are compared with the upload's (paths, sizes, SHA-256) first: a usage error naming
// the file, and nothing sent.
TEST(ControlPlaneDefects, MqctlResumeRefusesOtherLocalFilesBeforeSending) {
  Cluster cluster;
  cluster.StartServer();
  std::string text;
  for (int i = 0; text.size() < (3u << 20); ++i) text += absl::StrCat("line ", i, " of the dataset\n");
  const std::string file = cluster.dir().Sub("a.txt");
  std::ofstream(file, std::ios::binary) << text;
  // An upload that holds the first MiB of a.txt, as an interrupted mqctl leaves it.
  Upload upload;
  {
    grpc::ClientContext ctx;
    CreateUploadRequest req;
    req.set_kind(ARTIFACT_KIND_DATASET);
    req.set_name("med");
    FileEntry* f = req.add_files();
    f->set_path("a.txt");
    f->set_size(text.size());
    f->set_sha256(Sha256Hex(text));
    ASSERT_TRUE(cluster.registry().CreateUpload(&ctx, req, &upload).ok());
  }
  constexpr uint64_t kSent = 1 << 20;
  {
    grpc::ClientContext ctx;
    UploadChunksResponse resp;
    auto writer = cluster.registry().UploadChunks(&ctx, &resp);
    UploadChunk chunk;
    chunk.set_upload_id(upload.upload_id());
    chunk.set_path("a.txt");
    chunk.set_offset(0);
    chunk.set_data(text.substr(0, kSent));
    ASSERT_TRUE(writer->Write(chunk));
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  auto committed_bytes = [&] {
    grpc::ClientContext ctx;
    GetUploadRequest req;
    req.set_upload_id(upload.upload_id());
    Upload got;
    grpc::Status s = cluster.registry().GetUpload(&ctx, req, &got);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return got.files_size() == 1 ? got.files(0).committed_bytes() : 0;
  };
  ASSERT_EQ(committed_bytes(), kSent);
  auto resume = [&](const std::string& path, std::string* out) {
    return cluster.MqctlWithErrors({"datasets", "upload", path, "--name", "med", "--resume", upload.upload_id()}, out);
  };
  std::string out;
  // Another file name.
  const std::string other = cluster.dir().Sub("other.txt");
  std::ofstream(other, std::ios::binary) << text;
  EXPECT_EQ(resume(other, &out), 2) << out;
  EXPECT_NE(out.find(absl::StrCat("usage error: upload ", upload.upload_id(), " has the file a.txt, which is not among the local files")),
            std::string::npos) << out;
  // The same name, other content of the same size; then of another size.
  std::filesystem::create_directories(cluster.dir().Sub("b"));
  const std::string changed = cluster.dir().Sub("b") + "/a.txt";
  std::string bytes = text;
  bytes[bytes.size() - 2] = 'X';
  std::ofstream(changed, std::ios::binary | std::ios::trunc) << bytes;
  EXPECT_EQ(resume(changed, &out), 2) << out;
  EXPECT_NE(out.find(absl::StrCat(changed, " is not the a.txt upload ", upload.upload_id(), " was started with (its SHA-256 differs)")),
            std::string::npos) << out;
  EXPECT_EQ(out.find("upload interrupted"), std::string::npos) << out;  // no advice to repeat what cannot work
  std::ofstream(changed, std::ios::binary | std::ios::trunc) << text.substr(0, text.size() - 1);
  EXPECT_EQ(resume(changed, &out), 2) << out;
  EXPECT_NE(out.find("(its size differs)"), std::string::npos) << out;
  // Nothing was sent: the server still holds the first MiB, and the right file finishes the upload.
  EXPECT_EQ(committed_bytes(), kSent);
  ASSERT_EQ(resume(file, &out), 0) << out;
  EXPECT_NE(out.find("dataset med:1 uploaded"), std::string::npos) << out;
}

// Protobuf string fields must be UTF-8: a Generate or Score request carrying anything else fails to
// parse on the server before any check runs (gRPC answers UNIMPLEMENTED with no message). mqctl
// refuses such text itself, naming the flag and the byte, before it connects (no server listens).
TEST(ControlPlaneDefects, MqctlRefusesTextThatIsNotUtf8AndAZeroTokenBudgetBeforeSending) {
  TempDir dir;
  const std::string server = "127.0.0.1:" + std::to_string(PickFreePort());
  auto run = [&](const std::vector<std::string>& args, std::string* out) {  // usage errors go to stderr
    std::vector<std::string> argv = {MQCTL_BIN, "--server", server, "--insecure"};
    argv.insert(argv.end(), args.begin(), args.end());
    return RunCommandWithStderr(std::move(argv), out);
  };
  std::string out;
  EXPECT_EQ(run({"generate", "--model", "m", "--prompt", "hello \xff\xfe"}, &out), 2) << out;
  EXPECT_NE(out.find("--prompt is not valid UTF-8 (byte 6)"), std::string::npos) << out;
  EXPECT_EQ(run({"generate", "--model", "m", "--prompt", "ok", "--stop", "a\xc0\xaf"}, &out), 2) << out;  // overlong '/'
  EXPECT_NE(out.find("--stop is not valid UTF-8 (byte 1)"), std::string::npos) << out;
  EXPECT_EQ(run({"generate", "--model", "m", "--prompt", "\xed\xa0\x80"}, &out), 2) << out;  // a surrogate
  EXPECT_NE(out.find("byte 0"), std::string::npos) << out;
  const std::string file = dir.Sub("bad.txt");
  std::ofstream(file, std::ios::binary) << "fine text \xf4\x90\x80\x80 then";  // above U+10FFFF
  EXPECT_EQ(run({"score", "--model", "m", "--file", file}, &out), 2) << out;
  EXPECT_NE(out.find("--file is not valid UTF-8 (byte 10)"), std::string::npos) << out;
  // A directory or a missing file is a usage error naming the flag (was INTERNAL: pread / NOT_FOUND).
  EXPECT_EQ(run({"score", "--model", "m", "--file", dir.path()}, &out), 2) << out;
  EXPECT_NE(out.find("--file " + dir.path() + " is a directory"), std::string::npos) << out;
  EXPECT_EQ(run({"score", "--model", "m", "--file", dir.Sub("missing.txt")}, &out), 2) << out;
  EXPECT_NE(out.find("--file " + dir.Sub("missing.txt") + ": "), std::string::npos) << out;
  // --max-new-tokens 0 would be sent as "unset" (16 tokens): refused instead.
  EXPECT_EQ(run({"generate", "--model", "m", "--prompt", "x", "--max-new-tokens", "0"}, &out), 2) << out;
  EXPECT_NE(out.find("--max-new-tokens must be at least 1"), std::string::npos) << out;
  // The same for the other sizes whose 0 means "default" on the wire.
  EXPECT_EQ(run({"generate", "--model", "m", "--prompt", "x", "--n", "0"}, &out), 2) << out;
  EXPECT_NE(out.find("--n must be at least 1"), std::string::npos) << out;
  for (const char* flag : {"--samples", "--seq-len", "--eval-window"}) {
    EXPECT_EQ(run({"jobs", "submit", "--model", "m", "--calib", "c", flag, "0"}, &out), 2) << flag << out;
    EXPECT_NE(out.find(std::string(flag) + " must be at least 1"), std::string::npos) << out;
  }
  // Valid text (multi-byte included) passes the check and reaches the network: UNAVAILABLE.
  EXPECT_NE(run({"generate", "--model", "m", "--prompt", "caf\xc3\xa9 \xf0\x9f\x98\x80"}, &out), 2) << out;
  EXPECT_NE(out.find("UNAVAILABLE"), std::string::npos) << out;
}

}  // namespace
}  // namespace mq::test

namespace mq::test {
namespace {

// A Hugging Face cache snapshot is a directory of symbolic links into ../../blobs. mqctl once
// resolved each link before naming it, so the upload was refused ("contains ..") or a link to
// /etc/passwd was named by its target; files now count under the link's own name, and the
// registered files are the linked contents.
TEST(ControlPlaneDefects, ModelUploadFromASymlinkedSnapshotUsesTheLinkNames) {
  Cluster cluster;
  cluster.StartServer();
  namespace fs = std::filesystem;
  const fs::path root = cluster.dir().Sub("hub"), blobs = root / "blobs", snap = root / "snapshots" / "abc123";
  fs::create_directories(blobs);
  fs::create_directories(snap);
  int i = 0;
  for (const auto& e : fs::directory_iterator(SourceDir() + "/models/mamba-tiny")) {
    if (!e.is_regular_file()) continue;
    const fs::path blob = blobs / ("blob" + std::to_string(i++));
    fs::copy_file(e.path(), blob);
    fs::create_symlink(fs::path("../..") / "blobs" / blob.filename(), snap / e.path().filename());
  }
  ASSERT_GT(i, 2);
  std::string out;
  ASSERT_EQ(cluster.MqctlWithErrors({"models", "upload", snap.string(), "--name", "from-hub"}, &out), 0) << out;
  ASSERT_EQ(cluster.Mqctl({"models", "get", "from-hub", "--json"}, &out), 0) << out;
  EXPECT_NE(out.find("\"config.json\""), std::string::npos) << out;
  EXPECT_NE(out.find("\"tokenizer.json\""), std::string::npos) << out;
  EXPECT_EQ(out.find("blobs"), std::string::npos) << out;
  // The downloaded files are the linked bytes under the link names.
  const std::string dest = cluster.dir().Sub("dl");
  ASSERT_EQ(cluster.Mqctl({"models", "download", "from-hub", "--out", dest}, &out), 0) << out;
  for (const auto& e : fs::directory_iterator(SourceDir() + "/models/mamba-tiny")) {
    if (!e.is_regular_file()) continue;
    EXPECT_TRUE(fs::exists(fs::path(dest) / e.path().filename())) << e.path().filename();
    EXPECT_EQ(fs::file_size(fs::path(dest) / e.path().filename()), fs::file_size(e.path()));
  }
}


// The server quarantines a blob that fails its digest and reinstalls it from the next upload of
// its bytes; but mqctl's "same content as the latest version" shortcut never sent them, so the
// damaged version could not be repaired without knowing about --new-version. Now the upload asks
// the server, which does not count a corrupt blob as held: the bytes go again, as a new version.
TEST(ControlPlaneDefects, ReuploadOfContentWhoseStoredCopyRottedSendsItAgain) {
  Cluster cluster;
  cluster.StartServer();
  const std::string file = cluster.dir().Sub("corpus.txt"), text = "a dataset whose stored copy will rot\n";
  std::ofstream(file) << text;
  std::string out;
  ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "upload", file, "--name", "rot"}, &out), 0) << out;
  // Unchanged content, intact copy: no new version.
  ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "upload", file, "--name", "rot"}, &out), 0) << out;
  EXPECT_NE(out.find("rot:1 unchanged"), std::string::npos) << out;
  const std::string digest = Sha256Hex(text);
  const std::string blob = cluster.dir().Sub("data") + "/blobs/sha256/" + digest.substr(0, 2) + "/" + digest.substr(2, 2) + "/" + digest;
  ASSERT_TRUE(std::filesystem::exists(blob)) << blob;
  std::filesystem::permissions(blob, std::filesystem::perms::owner_write, std::filesystem::perm_options::add);
  { std::ofstream(blob, std::ios::binary | std::ios::trunc) << "A dataset whose stored copy will rot\n"; }
  const std::string dest = cluster.dir().Sub("dl");
  EXPECT_NE(cluster.MqctlWithErrors({"datasets", "download", "rot:1", "--out", dest}, &out), 0) << out;
  ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "upload", file, "--name", "rot"}, &out), 0) << out;
  EXPECT_NE(out.find("damaged or missing"), std::string::npos) << out;
  EXPECT_NE(out.find("rot:2"), std::string::npos) << out;
  // Both versions read back intact (they share the reinstalled blob).
  for (const char* ref : {"rot:1", "rot:2"}) {
    std::filesystem::remove_all(dest);
    ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "download", ref, "--out", dest}, &out), 0) << ref << out;
  }
  // A blob gone from the store is damage too: DATA_LOSS (it was NOT_FOUND, as for an unknown
  // name), and the same re-upload brings it back.
  std::filesystem::remove(blob);
  std::filesystem::remove_all(dest);
  EXPECT_NE(cluster.MqctlWithErrors({"datasets", "download", "rot:2", "--out", dest}, &out), 0);
  EXPECT_NE(out.find("DATA_LOSS"), std::string::npos) << out;
  EXPECT_NE(out.find("is missing"), std::string::npos) << out;
  ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "upload", file, "--name", "rot"}, &out), 0) << out;
  EXPECT_NE(out.find("rot:3"), std::string::npos) << out;
  std::filesystem::remove_all(dest);
  ASSERT_EQ(cluster.MqctlWithErrors({"datasets", "download", "rot:2", "--out", dest}, &out), 0) << out;
}


// A job naming a backend no worker has (--backend cuda on a CPU-only cluster) sat QUEUED for ever
// and `jobs get` showed neither the backend nor why: the server now says what it waits for.
TEST(ControlPlaneDefects, AJobWaitingForAnAbsentBackendSaysSo) {
  Cluster cluster;
  cluster.StartServer();
  cluster.UploadBundled();
  cluster.StartWorker();  // a cpu worker
  std::string out;
  ASSERT_EQ(cluster.Mqctl({"jobs", "submit", "--model", "mamba-tiny", "--preset", "rtn", "--bits", "w8a8", "--calib", "calib",
                           "--backend", "cuda", "--json"},
                          &out),
            0)
      << out;
  const std::string id = nlohmann::json::parse(out)["id"].get<std::string>();
  bool said = false;
  for (int i = 0; i < 100 && !said; ++i) {  // until the worker has registered
    ASSERT_EQ(cluster.Mqctl({"jobs", "get", id}, &out), 0) << out;
    said = out.find("waiting      waiting for a cuda worker: none is registered (1 worker(s) of other backends)") != std::string::npos;
    if (!said) absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_TRUE(said) << out;
  EXPECT_NE(out.find("backend      cuda"), std::string::npos) << out;
  EXPECT_NE(out.find("QUEUED"), std::string::npos) << out;
  ASSERT_EQ(cluster.Mqctl({"jobs", "list", "--json"}, &out), 0) << out;
  EXPECT_NE(out.find("none is registered"), std::string::npos) << out;
}

// A result the registry can never take (here: its output name reached the last version while the
// job was queued) once kept the job RUNNING and its worker's one job slot taken for 30 minutes of
// FinishJob retries, and CancelJob could not end it. The job now fails, saying why, and the worker
// goes on to the next job; a job submitted for a name with no version left is refused at once.
TEST(ControlPlaneDefects, AResultTheRegistryRefusesFailsTheJobAndFreesTheWorker) {
  Cluster cluster;
  cluster.StartServer();
  cluster.UploadBundled();
  Job first;
  ASSERT_TRUE(Submit(cluster, "mamba-tiny", "vmax", &first).ok());
  // While it waits for a worker, its output name gets the last version there is.
  ASSERT_EQ(cluster.Mqctl({"models", "upload", SourceDir() + "/models/mamba-tiny", "--name", "vmax", "--version", "2147483647"}), 0);
  cluster.StartWorker({"--max-jobs", "1"});
  const Job done = cluster.WaitJob(first.id(), absl::Seconds(120), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(done.state(), JOB_STATE_FAILED) << done.DebugString() << cluster.WorkerLog(0);
  // Refused when the worker starts its result upload (or, in a race, at the commit).
  EXPECT_NE(done.error().find("could not be"), std::string::npos) << done.error();
  EXPECT_NE(done.error().find("2147483647"), std::string::npos) << done.error();
  EXPECT_TRUE(done.result_model().empty());
  // Submitted now, such a job is refused at once instead of failing after its whole run.
  Job refused;
  grpc::Status st = Submit(cluster, "mamba-tiny", "vmax", &refused);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED) << st.error_message();
  EXPECT_NE(st.error_message().find("spec.output_name: model vmax has reached version 2147483647"), std::string::npos)
      << st.error_message();
  // The worker is free: the next job runs to the end on it.
  Job second;
  ASSERT_TRUE(Submit(cluster, "mamba-tiny", "fine", &second).ok());
  const Job ok = cluster.WaitJob(second.id(), absl::Seconds(120), [](const Job& j) { return IsTerminalState(j.state()); });
  EXPECT_EQ(ok.state(), JOB_STATE_SUCCEEDED) << ok.DebugString() << cluster.WorkerLog(0);
  EXPECT_EQ(ok.result_model(), "fine:1");
}

}  // namespace
}  // namespace mq::test
