// mqctl score: perplexity and per-token log-probabilities of a text (InferenceService.Score).

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <iterator>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "commands.h"
#include "file_util.h"
#include "grpc_status.h"
#include "inference_flags.h"
#include "interrupt_watcher.h"
#include "terminal_text.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

// Messages are at most 8 MiB; a larger text could not be sent anyway.
constexpr uint64_t kMaxTextBytes = 8 << 20;

constexpr char kScoreHelp[] =
    R"(usage: mqctl score --model NAME[:VERSION] (--text TEXT | --file PATH) [--top-logprobs N] [--json]

Scores a text under a model on the server: prints the number of tokens, the mean negative
log-likelihood (nats per token) and the perplexity (exp of it) over the scored positions (every
token after the first).

  --text TEXT          the text
  --file PATH          read the text from a file ("-": standard input), at most 8 MiB
  --top-logprobs N     also print a table with each position's token, its log-probability and the
                       N (0..20) most likely alternatives
  --json               the whole ScoreResponse as one JSON object (every field)
  --timeout SECONDS    deadline of the call (default 60)
)";

absl::StatusOr<std::string> ReadText(const Args& args) {
  const bool has_text = args.Has("text");
  const bool has_file = args.Has("file");
  if (has_text == has_file) return absl::InvalidArgumentError("score needs exactly one of --text TEXT and --file PATH");
  if (has_text) return *args.Get("text");
  const std::string path = args.GetOr("file", "");
  if (path != "-") {
    // Local problems name the flag (exit 2), not a server-like INTERNAL/NOT_FOUND status.
    std::error_code ec;
    if (std::filesystem::is_directory(path, ec))
      return absl::InvalidArgumentError(absl::StrCat("--file ", path, " is a directory, not a text file"));
    auto text = ReadFileToString(path, kMaxTextBytes);
    if (!text.ok()) return absl::InvalidArgumentError(absl::StrCat("--file ", path, ": ", text.status().message()));
    return text;
  }
  std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
  if (text.size() > kMaxTextBytes) return absl::InvalidArgumentError("standard input is larger than 8 MiB");
  return text;
}

}  // namespace

const char* ScoreHelp() { return kScoreHelp; }

int RunScoreCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  std::set<std::string> allowed = {"model", "text", "file", "top-logprobs"};
  allowed.insert(GlobalOptions().begin(), GlobalOptions().end());
  absl::Status s = args.AllowOnly(allowed);
  if (!s.ok()) return CommandUsageError("score", std::string(s.message()));
  auto model = InferenceModelRef(args, words, "score");
  if (!model.ok()) return CommandUsageError("score", std::string(model.status().message()));
  auto top = OptionalInt(args, "top-logprobs", INT32_MIN, INT32_MAX);
  if (!top.ok()) return CommandUsageError("score", std::string(top.status().message()));
  auto text = ReadText(args);
  if (!text.ok()) {
    if (text.status().code() == absl::StatusCode::kInvalidArgument)
      return CommandUsageError("score", std::string(text.status().message()));
    return ReportError(text.status());
  }

  if (auto bad = FirstInvalidUtf8(*text))
    return CommandUsageError("score", std::string(args.Has("file") ? "--file" : "--text") +
                                          " is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
  ScoreRequest req;
  req.set_model(*model);
  req.set_text(*std::move(text));
  if (*top) req.set_top_logprobs(static_cast<int32_t>(**top));
  ScoreResponse resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  InterruptWatcher interrupt([&ctx] { ctx.TryCancel(); });
  const grpc::Status status = cli.inference->Score(&ctx, req, &resp);
  if (interrupt.interrupted()) {
    std::fprintf(stderr, "score: cancelled (interrupt)\n");
    return kExitInterrupted;
  }
  if (!status.ok()) {
    ReportError(FromGrpcStatus(status));
    return kExitError;  // a server's INVALID_ARGUMENT is not a usage error of mqctl
  }
  if (cli.json) {
    cli.PrintJson(resp, /*with_defaults=*/true);
    return kExitOk;
  }
  std::printf("model       %s\n", SanitizeTerminalText(resp.model(), false).c_str());
  std::printf("tokens      %d (%d scored)\n", resp.token_ids_size(), resp.logprobs_size());
  std::printf("mean NLL    %.6f nats/token\n", resp.mean_nll());
  std::printf("perplexity  %.4f\n", resp.perplexity());
  if (args.Has("top-logprobs")) {
    std::printf("\n%8s %8s %10s  %s\n", "position", "token", "logprob", "alternatives (token logprob)");
    for (int i = 0; i < resp.logprobs_size(); ++i) {
      const TokenLogprob& lp = resp.logprobs(i);
      std::string alternatives;
      for (int k = 0; k < lp.top_size(); ++k) {
        absl::StrAppend(&alternatives, k ? ", " : "",
                        absl::StrFormat("%d %.4f", lp.top(k).token_id(), lp.top(k).logprob()));
      }
      std::printf("%8d %8d %10.4f  %s\n", i + 1, lp.token_id(), lp.logprob(), alternatives.c_str());
    }
  }
  return kExitOk;
}

}  // namespace mq::cli
