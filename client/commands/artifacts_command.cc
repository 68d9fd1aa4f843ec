// mqctl models ... and mqctl datasets ...: both are registry artifacts.
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <optional>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "commands.h"
#include "interrupt_watcher.h"
#include "file_transfer.h"
#include "file_util.h"
#include "grpc_status.h"
#include "progress_bar.h"
#include "sha256.h"
#include "terminal_text.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

const char* Noun(ArtifactKind kind) { return kind == ARTIFACT_KIND_MODEL ? "model" : "dataset"; }

std::string Ref(const Artifact& a) { return absl::StrCat(a.name(), ":", a.version()); }

absl::StatusOr<Upload> GetUploadState(CliContext& cli, const std::string& id) {
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  GetUploadRequest req;
  req.set_upload_id(id);
  Upload upload;
  absl::Status s = FromGrpcStatus(cli.registry->GetUpload(&ctx, req, &upload));
  if (!s.ok()) return s;
  return upload;
}

// Declares (or resumes) the upload, sends missing bytes, commits.
absl::StatusOr<Artifact> GetArtifact(CliContext& cli, ArtifactKind kind, const std::string& ref);

// Whether an artifact holds exactly these files (paths, sizes and digests).
bool SameFiles(const Artifact& a, const google::protobuf::RepeatedPtrField<FileEntry>& files) {
  auto key = [](const FileEntry& f) { return absl::StrCat(f.path(), "\t", f.size(), "\t", f.sha256()); };
  std::set<std::string> have, want;
  for (const auto& f : a.files()) have.insert(key(f));
  for (const auto& f : files) want.insert(key(f));
  return have == want;
}

// Before a resume sends anything: whether the local files are the ones `upload` declared (the same
// paths, sizes and SHA-256). Other bytes would be sent in full only to fail the server's digest
// check, which discards what it had received of that file. Returns why not ("" when they are),
// or the error reading a local file.
absl::StatusOr<std::string> ResumeMismatch(const Upload& upload, const std::map<std::string, std::string>& files) {
  const std::string again = "resume with the file or directory the upload was started with, or upload without --resume";
  std::set<std::string> declared;
  for (const auto& f : upload.files()) {
    declared.insert(f.file().path());
    auto it = files.find(f.file().path());
    if (it == files.end()) {
      return absl::StrCat("upload ", upload.upload_id(), " has the file ", f.file().path(),
                          ", which is not among the local files; ", again);
    }
    auto local = DescribeLocalFile(it->second, f.file().path());
    if (!local.ok()) return local.status();
    if (local->size() != f.file().size() || local->sha256() != f.file().sha256()) {
      return absl::StrCat(it->second, " is not the ", f.file().path(), " upload ", upload.upload_id(), " was started with (its ",
                          local->size() != f.file().size() ? "size" : "SHA-256", " differs); ", again);
    }
  }
  for (const auto& [path, local] : files) {
    if (declared.count(path) == 0) {
      return absl::StrCat(local, " is not a file of upload ", upload.upload_id(), "; ", again);
    }
  }
  return std::string();
}

void PrintUploaded(CliContext& cli, ArtifactKind kind, const Artifact& from_server) {
  if (cli.json) {
    cli.PrintJson(from_server);
  } else {
    const Artifact artifact = ForTerminal(from_server);
    std::printf("%s %s uploaded (%s, %d files)\n", Noun(kind), Ref(artifact).c_str(),
                FormatBytes(artifact.total_size()).c_str(), artifact.files_size());
  }
}

int UploadArtifact(CliContext& cli, const Args& args, ArtifactKind kind, const std::map<std::string, std::string>& files) {
  auto name = args.Require("name");
  if (!name.ok()) return ReportError(name.status());
  auto version = args.GetInt("version", 0, 0, 2147483647);
  if (!version.ok()) return ReportError(version.status());
  Upload upload;
  if (auto resume = args.Get("resume")) {
    auto state = GetUploadState(cli, *resume);
    if (absl::IsNotFound(state.status())) {
      // Gone: expired, aborted, or committed by the interrupted run (its answer lost).
      // CommitUpload is idempotent, so asking again tells which.
      grpc::ClientContext ctx;
      cli.Prepare(&ctx);
      CommitUploadRequest commit;
      commit.set_upload_id(*resume);
      Artifact artifact;
      if (cli.registry->CommitUpload(&ctx, commit, &artifact).ok() && artifact.name() == *name) {
        PrintUploaded(cli, kind, artifact);
        return kExitOk;
      }
    }
    if (!state.ok()) return ReportError(state.status());
    if (state->name() != *name || state->kind() != kind) {
      return UsageError(absl::StrCat("upload ", *resume, " is for ", state->name(), ", not ", *name));
    }
    auto mismatch = ResumeMismatch(*state, files);
    if (!mismatch.ok()) return ReportError(mismatch.status());
    if (!mismatch->empty()) return UsageError(*mismatch);
    upload = *std::move(state);
  } else {
    CreateUploadRequest req;
    req.set_kind(kind);
    req.set_name(*name);
    req.set_version(*version);
    for (const auto& [path, local] : files) {
      auto entry = DescribeLocalFile(local, path);
      if (!entry.ok()) return ReportError(entry.status());
      *req.add_files() = *entry;
    }
    // Identical content to the latest version is that version (no new one) unless --new-version
    // or an explicit --version asks for one: re-running an upload script changes nothing. Unless
    // the server's copy is damaged: the upload created below says so (a corrupt or missing blob
    // is not counted as held), and then the bytes are sent again as a new version, which also
    // reinstalls the blob the old version shares.
    std::optional<Artifact> same;
    if (*version == 0 && !args.Has("new-version")) {
      auto latest = GetArtifact(cli, kind, *name);
      if (latest.ok() && SameFiles(*latest, req.files())) same = *std::move(latest);
    }
    req.set_description(args.GetOr("description", ""));
    for (const std::string& label : args.GetAll("label")) {
      std::pair<std::string, std::string> kv = absl::StrSplit(label, absl::MaxSplits('=', 1));
      (*req.mutable_labels())[kv.first] = kv.second;
    }
    grpc::ClientContext ctx;
    cli.Prepare(&ctx);
    absl::Status s = FromGrpcStatus(cli.registry->CreateUpload(&ctx, req, &upload));
    if (!s.ok()) return ReportError(s);
    if (same && PendingBytes(upload) == 0) {
      grpc::ClientContext abort_ctx;
      cli.Prepare(&abort_ctx);
      AbortUploadRequest abort;
      abort.set_upload_id(upload.upload_id());
      AbortUploadResponse aborted;
      cli.registry->AbortUpload(&abort_ctx, abort, &aborted);  // best effort: an unused upload expires anyway
      if (cli.json) cli.PrintJson(*same);
      else std::printf("%s %s unchanged: same content as the latest version (--new-version makes a new one)\n",
                       Noun(kind), Ref(ForTerminal(*same)).c_str());
      return kExitOk;
    }
    if (same) {
      std::fprintf(stderr, "%s %s has the same content, but the server's copy of it is damaged or missing: "
                           "sending the bytes again as a new version\n",
                   Noun(kind), Ref(ForTerminal(*same)).c_str());
    }
  }
  // Ctrl-C (or SIGTERM) mid-transfer: the server keeps what it has; say how to go on from there.
  const std::string resume_hint = absl::StrCat(
      "upload interrupted; the server keeps the bytes it received for 24 h. To resume, run the same command again with\n"
      "  --resume ", upload.upload_id(), "\n");
  InterruptWatcher interrupt([&resume_hint] {
    std::fputs(("\n" + resume_hint).c_str(), stderr);
    std::_Exit(kExitInterrupted);
  });
  TransferPrinter printer(absl::StrCat("uploading ", *name), cli.stderr_is_tty);
  absl::Status s = SendUploadFiles(
      upload, files, [&cli](grpc::ClientContext* ctx) { cli.Prepare(ctx, false); },
      [&cli](grpc::ClientContext* ctx, UploadChunksResponse* resp) {
        return std::unique_ptr<grpc::ClientWriterInterface<UploadChunk>>(cli.registry->UploadChunks(ctx, resp));
      },
      [&cli, id = upload.upload_id()]() { return GetUploadState(cli, id); },
      [&printer](uint64_t done, uint64_t total) { printer.Update(done, total); });
  printer.Done();
  if (!s.ok()) {
    std::fputs(resume_hint.c_str(), stderr);
    return ReportError(s);
  }
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  CommitUploadRequest commit;
  commit.set_upload_id(upload.upload_id());
  Artifact artifact;
  s = FromGrpcStatus(cli.registry->CommitUpload(&ctx, commit, &artifact));
  if (!s.ok()) {
    // A lost answer may hide a commit that took effect: --resume asks again (idempotent).
    if (absl::IsUnavailable(s) || absl::IsDeadlineExceeded(s)) std::fputs(resume_hint.c_str(), stderr);
    return ReportError(s);
  }
  PrintUploaded(cli, kind, artifact);
  return kExitOk;
}

int List(CliContext& cli, const Args& args, ArtifactKind kind) {
  auto page_size = args.GetInt("limit", 100, 1, 1000);
  if (!page_size.ok()) return ReportError(page_size.status());
  ListArtifactsRequest req;
  req.set_kind(kind);
  req.set_name(args.GetOr("name", ""));
  req.set_page_size(static_cast<int32_t>(*page_size));
  req.set_page_token(args.GetOr("page-token", ""));
  ListArtifactsResponse resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.registry->ListArtifacts(&ctx, req, &resp));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(resp);
    return kExitOk;
  }
  std::printf("%-40s %10s %6s  %-19s  %s\n", "REF", "SIZE", "FILES", "CREATED", kind == ARTIFACT_KIND_MODEL ? "SOURCE" : "");
  for (const auto& from_server : resp.artifacts()) {
    const Artifact a = ForTerminal(from_server);
    std::printf("%-40s %10s %6d  %-19s  %s\n", Ref(a).c_str(), FormatBytes(a.total_size()).c_str(), a.files_size(),
                FormatTime(a.create_time().seconds()).c_str(),
                a.has_quantization() ? absl::StrCat(a.quantization().preset(), " ", a.quantization().bits(), " of ",
                                                    a.quantization().source_model()).c_str()
                                     : "");
  }
  if (!resp.next_page_token().empty()) std::printf("more: --page-token %s\n", SanitizeTerminalText(resp.next_page_token(), false).c_str());
  return kExitOk;
}

absl::StatusOr<Artifact> GetArtifact(CliContext& cli, ArtifactKind kind, const std::string& ref) {
  GetArtifactRequest req;
  req.set_kind(kind);
  req.set_ref(ref);
  Artifact a;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.registry->GetArtifact(&ctx, req, &a));
  if (!s.ok()) return s;
  return a;
}

int Get(CliContext& cli, ArtifactKind kind, const std::string& ref) {
  auto a = GetArtifact(cli, kind, ref);
  if (!a.ok()) return ReportError(a.status());
  if (cli.json) {
    cli.PrintJson(*a);
    return kExitOk;
  }
  a = ForTerminal(*a);  // no escape sequence or forged line reaches the terminal
  std::printf("%s %s\n", Noun(kind), Ref(*a).c_str());
  if (!a->description().empty()) std::printf("description  %s\n", a->description().c_str());
  if (!a->model_type().empty()) std::printf("model_type   %s\n", a->model_type().c_str());
  std::printf("size         %s\n", FormatBytes(a->total_size()).c_str());
  std::printf("created      %s\n", FormatTime(a->create_time().seconds()).c_str());
  for (const auto& [k, v] : a->labels()) std::printf("label        %s=%s\n", k.c_str(), v.c_str());
  std::printf("files:\n");
  for (const auto& f : a->files()) {
    std::printf("  %-32s %12s  sha256:%s\n", f.path().c_str(), FormatBytes(f.size()).c_str(), f.sha256().c_str());
  }
  if (a->has_quantization()) {
    const auto& q = a->quantization();
    std::printf("quantization %s %s scope %s of %s (job %s)\n", q.preset().c_str(), q.bits().c_str(), q.scope().c_str(),
                q.source_model().c_str(), q.job_id().c_str());
    std::printf("report       %s\n", q.report_json().c_str());
  }
  return kExitOk;
}

int Download(CliContext& cli, const Args& args, ArtifactKind kind, const std::string& ref) {
  auto out = args.Require("out");
  if (!out.ok()) return ReportError(out.status());
  auto a = GetArtifact(cli, kind, ref);
  if (!a.ok()) return ReportError(a.status());
  const std::string pinned = Ref(*a);
  for (const auto& f : a->files()) {
    std::string dest = JoinPath(*out, f.path());
    absl::Status s = MakeDirs(Dirname(dest));
    if (!s.ok()) return ReportError(s);
    // A file already there with the right digest is not fetched again.
    std::error_code ec;
    if (std::filesystem::is_regular_file(dest, ec) && std::filesystem::file_size(dest, ec) == f.size() && !ec) {
      auto digest = Sha256File(dest, f.size());
      if (digest.ok() && *digest == f.sha256()) continue;
    }
    TransferPrinter printer(f.path(), cli.stderr_is_tty);
    s = DownloadToFile(
        dest, f.size(), f.sha256(), [&cli](grpc::ClientContext* ctx) { cli.Prepare(ctx, false); },
        [&](grpc::ClientContext* ctx, uint64_t offset) {
          ReadFileRequest req;
          req.set_kind(kind);
          req.set_ref(pinned);
          req.set_path(f.path());
          req.set_offset(offset);
          return std::unique_ptr<grpc::ClientReaderInterface<FileChunk>>(cli.registry->ReadFile(ctx, req));
        },
        [&printer](uint64_t done, uint64_t total) { printer.Update(done, total); });
    printer.Done();
    if (!s.ok()) return ReportError(s);
  }
  if (cli.json) {
    cli.PrintJson(*a);
  } else {
    std::printf("%s %s downloaded to %s\n", Noun(kind), pinned.c_str(), out->c_str());
  }
  return kExitOk;
}

int Delete(CliContext& cli, ArtifactKind kind, const std::string& ref) {
  DeleteArtifactRequest req;
  req.set_kind(kind);
  req.set_ref(ref);
  DeleteArtifactResponse resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.registry->DeleteArtifact(&ctx, req, &resp));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(resp);
  } else {
    std::printf("%s %s deleted\n", Noun(kind), ref.c_str());
  }
  return kExitOk;
}

// Files under `dir`, by '/'-separated relative path. A symbolic link to a file counts under its
// own name (a Hugging Face cache snapshot is links into ../../blobs): the path is taken lexically,
// never resolved to the target's.
absl::StatusOr<std::map<std::string, std::string>> ListDirectory(const std::string& dir) {
  std::map<std::string, std::string> files;
  std::error_code ec;
  if (!std::filesystem::is_directory(dir, ec)) return absl::InvalidArgumentError(absl::StrCat(dir, " is not a directory"));
  for (auto it = std::filesystem::recursive_directory_iterator(dir, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    files[it->path().lexically_relative(dir).generic_string()] = it->path().string();
  }
  if (ec) return absl::InternalError(absl::StrCat("listing ", dir, ": ", ec.message()));
  if (files.empty()) return absl::InvalidArgumentError(absl::StrCat(dir, " has no files"));
  return files;
}

int RunArtifacts(CliContext& cli, const Args& args, const std::vector<std::string>& words, ArtifactKind kind) {
  const std::string group = kind == ARTIFACT_KIND_MODEL ? "models" : "datasets";
  if (words.empty()) return UsageError(absl::StrCat(group, " needs a subcommand: upload, list, get, download, delete"));
  const std::string& verb = words[0];
  auto allow = [&](std::set<std::string> extra) {
    extra.insert(GlobalOptions().begin(), GlobalOptions().end());
    return args.AllowOnly(extra);
  };
  auto need = [&](size_t n, const char* what) -> bool {
    if (words.size() != n + 1) {
      UsageError(absl::StrCat(group, " ", verb, " takes ", what));
      return false;
    }
    return true;
  };
  absl::Status allowed;
  if (verb == "upload") {
    allowed = allow({"name", "version", "description", "label", "resume", "new-version"});
    if (!allowed.ok()) return ReportError(allowed);
    if (!need(1, kind == ARTIFACT_KIND_MODEL ? "a model directory" : "a text file")) return kExitUsage;
    std::map<std::string, std::string> files;
    if (kind == ARTIFACT_KIND_MODEL) {
      auto listed = ListDirectory(words[1]);
      if (!listed.ok()) return ReportError(listed.status());
      files = *std::move(listed);
    } else {
      std::string base = std::filesystem::path(words[1]).filename().string();
      bool clean = !base.empty() && base != "." && base != "..";
      for (char c : base) clean = clean && (isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-');
      files[clean ? base : "data.txt"] = words[1];
    }
    return UploadArtifact(cli, args, kind, files);
  }
  if (verb == "list") {
    allowed = allow({"name", "limit", "page-token"});
    if (!allowed.ok()) return ReportError(allowed);
    if (!need(0, "no arguments")) return kExitUsage;
    return List(cli, args, kind);
  }
  if (verb == "get") {
    allowed = allow({});
    if (!allowed.ok()) return ReportError(allowed);
    if (!need(1, "a reference NAME[:VERSION]")) return kExitUsage;
    return Get(cli, kind, words[1]);
  }
  if (verb == "download") {
    allowed = allow({"out"});
    if (!allowed.ok()) return ReportError(allowed);
    if (!need(1, "a reference NAME[:VERSION]")) return kExitUsage;
    return Download(cli, args, kind, words[1]);
  }
  if (verb == "delete") {
    allowed = allow({});
    if (!allowed.ok()) return ReportError(allowed);
    if (!need(1, "a reference NAME:VERSION")) return kExitUsage;
    return Delete(cli, kind, words[1]);
  }
  return UsageError(absl::StrCat("unknown ", group, " subcommand \"", verb, "\""));
}

}  // namespace

int RunModelsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  return RunArtifacts(cli, args, words, ARTIFACT_KIND_MODEL);
}

int RunDatasetsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  return RunArtifacts(cli, args, words, ARTIFACT_KIND_DATASET);
}

}  // namespace mq::cli
