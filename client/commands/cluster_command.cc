// mqctl workers list, mqctl server status: the operator's view of the cluster (ClusterService).
#include <cstdio>
#include <string>

#include <grpcpp/channel.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/time/clock.h"
#include "commands.h"
#include "grpc_status.h"
#include "mambaquant/v1/cluster.grpc.pb.h"
#include "terminal_text.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

std::string Gib(uint64_t bytes) { return absl::StrCat(static_cast<int64_t>(bytes / (1ull << 30)), " GiB"); }

// A one-line value from the server, safe on a terminal and cut to `width` characters.
std::string Field(const std::string& s, size_t width) {
  std::string out = SanitizeTerminalText(s, /*keep_newlines=*/false);
  if (out.size() > width) out = out.substr(0, width - 1) + "~";
  return out;
}

int ListWorkers(CliContext& cli) {
  auto stub = ClusterService::NewStub(cli.channel);
  ListWorkersResponse resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(stub->ListWorkers(&ctx, ListWorkersRequest(), &resp));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(resp);
    return kExitOk;
  }
  std::printf("%-20s %-14s %-8s %-28s %-8s %-6s %-9s %s\n", "WORKER", "NAME", "DEVICE", "DEVICE NAME", "MEMORY", "SLOTS",
              "LEASE", "LOADED MODELS (running/waiting)");
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  for (const auto& w : resp.workers()) {
    std::string models;
    for (const auto& m : w.load().models())
      absl::StrAppend(&models, models.empty() ? "" : ", ", Field(m.model(), 40), " (", m.running(), "/", m.waiting(), ")");
    for (const auto& m : w.load().loading()) absl::StrAppend(&models, models.empty() ? "" : ", ", Field(m, 40), " (loading)");
    // The device it computes on when its inference stream says so, else what it registered.
    const std::string device = w.inference_connected() ? w.capacity().device() : w.backend();
    std::printf("%-20s %-14s %-8s %-28s %-8s %-6s %-9s %s\n", Field(w.worker_id(), 20).c_str(), Field(w.name(), 14).c_str(),
                Field(device, 8).c_str(), Field(w.device_name(), 28).c_str(), Gib(w.memory_bytes()).c_str(),
                w.inference_connected() ? std::to_string(w.capacity().max_sequences()).c_str() : "-",
                absl::StrCat(w.lease_expires().seconds() - now, " s").c_str(), models.empty() ? "-" : models.c_str());
  }
  if (resp.workers().empty()) std::printf("(no worker registered)\n");
  return kExitOk;
}

int ServerStatusCommand(CliContext& cli) {
  auto stub = ClusterService::NewStub(cli.channel);
  ServerStatus resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(stub->GetServerStatus(&ctx, GetServerStatusRequest(), &resp));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(resp);
    return kExitOk;
  }
  std::printf("server version     %s\n", Field(resp.version(), 40).c_str());
  std::printf("uptime             %.0f s\n", resp.uptime_seconds());
  std::printf("workers            %d registered, %d serving inference\n", resp.workers(), resp.inference_workers());
  std::string models;
  for (const auto& m : resp.loaded_models()) absl::StrAppend(&models, models.empty() ? "" : ", ", Field(m, 60));
  std::printf("loaded models      %s\n", models.empty() ? "-" : models.c_str());
  return kExitOk;
}

}  // namespace

int RunWorkersCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  if (words.size() != 1 || words[0] != "list") return UsageError("usage: mqctl workers list [--json]");
  return ListWorkers(cli);
}

int RunServerCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  if (words.size() != 1 || words[0] != "status") return UsageError("usage: mqctl server status [--json]");
  return ServerStatusCommand(cli);
}

}  // namespace mq::cli
