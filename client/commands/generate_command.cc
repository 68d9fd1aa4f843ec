// mqctl generate: streams generated text from InferenceService.Generate.
//
// Text mode, one completion: the text goes to stdout as it arrives (flushed after every delta),
// then a summary line to stderr. With --n > 1 the completions' messages interleave, so each is
// printed whole under a header once it finishes. --json: one JSON object per response message.
// Text shown on a terminal is sanitized (terminal_text.h); text written to a pipe or file is
// passed through exactly.

#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <map>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "commands.h"
#include "grpc_status.h"
#include "inference_flags.h"
#include "interrupt_watcher.h"
#include "terminal_text.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

// Whether two descriptors are the same open file (device and inode), e.g. after 2>&1.
bool SameOpenFile(int a, int b) {
  struct stat sa, sb;
  return ::fstat(a, &sa) == 0 && ::fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

struct Completion {
  int index = 0;
  int messages = 0;
  std::string text;  // buffered when the completions are printed once finished
  std::vector<TokenLogprob> logprobs;
  int64_t tokens = 0;  // token ids received
  bool finished = false;
  std::string finish_reason;
  std::string stop_string;
  int32_t prompt_tokens = 0;
  int32_t completion_tokens = 0;
  uint64_t seed = 0;
};


// Writes text to stdout, sanitized when stdout is a terminal, and remembers whether the output
// now ends a line.
class TextOut {
 public:
  explicit TextOut(bool tty) : tty_(tty) {}
  void Write(const std::string& text) {
    if (text.empty()) return;
    const std::string shown = tty_ ? SanitizeTerminalText(text) : text;
    std::fwrite(shown.data(), 1, shown.size(), stdout);
    std::fflush(stdout);
    at_line_start_ = shown.back() == '\n';
  }
  // On a terminal, ends an unfinished line so that what follows starts on its own line. A pipe
  // gets the text exactly as generated.
  void EndLineOnTerminal() {
    if (tty_ && !at_line_start_) Write("\n");
  }
  void EndLine() {
    if (!at_line_start_) Write("\n");
  }
  bool at_line_start() const { return at_line_start_; }

 private:
  bool tty_;
  bool at_line_start_ = true;
};

std::string FinishLabel(const Completion& c) {
  if (!c.finished) return "unfinished";
  std::string label = c.finish_reason;
  if (!c.stop_string.empty()) absl::StrAppend(&label, " ", QuoteForTerminal(c.stop_string));
  return label;
}

void PrintLogprobs(TextOut& out, const Completion& c) {
  out.Write(absl::StrFormat("--- logprobs of completion %d: token logprob [alternatives] ---\n", c.index));
  for (const TokenLogprob& lp : c.logprobs) {
    std::string line = absl::StrFormat("%8d %10.4f", lp.token_id(), lp.logprob());
    if (lp.top_size() > 0) {
      absl::StrAppend(&line, "  [");
      for (int i = 0; i < lp.top_size(); ++i) {
        absl::StrAppend(&line, i ? ", " : "", absl::StrFormat("%d %.4f", lp.top(i).token_id(), lp.top(i).logprob()));
      }
      absl::StrAppend(&line, "]");
    }
    out.Write(line + "\n");
  }
}

// --n > 1: one completion under its header.
void PrintCompletionBlock(TextOut& out, const Completion& c, bool with_logprobs) {
  out.EndLine();
  out.Write(absl::StrFormat("--- completion %d (%s, %d tokens, seed %u) ---\n", c.index, FinishLabel(c),
                            c.finished ? c.completion_tokens : c.tokens, c.seed));
  out.Write(c.text);
  out.EndLine();
  if (with_logprobs) PrintLogprobs(out, c);
}

constexpr char kGenerateHelp[] =
    R"(usage: mqctl generate --model NAME[:VERSION] (--prompt TEXT | --prompt-ids 1,2,3) [options]

Streams the model's continuation of the prompt to stdout as it is generated, then prints a summary
line to stderr: finish reason, prompt and completion tokens, seed, model, time, tokens/s.

input (one of):
  --prompt TEXT               UTF-8 text, tokenized on the worker
  --prompt-ids 1,2,3          token ids
generation:
  --max-new-tokens N          tokens to generate (server default 16; at most 4096)
  --min-tokens N              no eos/stop token before N tokens
  --stop STR                  stop when the text contains STR (repeatable; the text ends before it)
  --stop-token-id N[,N...]    stop after any of these tokens (repeatable)
  --ignore-eos                keep generating past the end-of-sequence token
  --n N                       completions of the prompt (1..16); with N > 1 each is printed under a
                              header once it has finished
sampling (applied in this order: penalties, temperature, min-p, top-k, top-p):
  --temperature F             0 = greedy (default)
  --top-k N  --top-p F  --min-p F
  --repetition-penalty F  --presence-penalty F  --frequency-penalty F
  --seed N                    seed of the random draws (default: the server picks one and reports it);
                              completion i uses seed + i
output:
  --logprobs N                also print each token's log-probability and N (0..20) alternatives
  --json                      one JSON object per response message (JSON lines), every field; no
                              summary line
  --timeout SECONDS           deadline of the whole call (default: none)

On a terminal, control characters in the generated text other than newline and tab are shown as
escapes (\x1b); through a pipe the text is written exactly. Ctrl-C cancels the call (the worker frees
the sequence) and exits with status 130. Values are checked here only for syntax; the server checks
ranges and names the limit that was hit.
)";

}  // namespace

const char* GenerateHelp() { return kGenerateHelp; }

int RunGenerateCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  // clang-format off
  std::set<std::string> allowed = {
      "model", "prompt", "prompt-ids", "max-new-tokens", "max-tokens", "min-tokens", "temperature", "top-k",
      "top-p", "min-p", "repetition-penalty", "presence-penalty", "frequency-penalty", "seed", "stop",
      "stop-token-id", "ignore-eos", "logprobs", "n"};
  // clang-format on
  allowed.insert(GlobalOptions().begin(), GlobalOptions().end());
  absl::Status s = args.AllowOnly(allowed);
  if (!s.ok()) return CommandUsageError("generate", std::string(s.message()));
  auto model = InferenceModelRef(args, words, "generate");
  if (!model.ok()) return CommandUsageError("generate", std::string(model.status().message()));

  GenerateRequest req;
  req.set_model(*model);
  const bool has_text = args.Has("prompt");
  const bool has_ids = args.Has("prompt-ids");
  if (has_text == has_ids)
    return CommandUsageError("generate", "generate needs exactly one of --prompt TEXT and --prompt-ids 1,2,3");
  if (has_text) {
    const std::string prompt = *args.Get("prompt");
    if (auto bad = FirstInvalidUtf8(prompt))
      return CommandUsageError("generate", "--prompt is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
    req.set_prompt(prompt);
  } else {
    auto ids = ParseIdList("prompt-ids", *args.Get("prompt-ids"));
    if (!ids.ok()) return CommandUsageError("generate", std::string(ids.status().message()));
    req.mutable_prompt_tokens()->mutable_ids()->Add(ids->begin(), ids->end());
  }
  if (args.Has("max-new-tokens") && args.Has("max-tokens")) {
    return CommandUsageError("generate", "--max-tokens is the old spelling of --max-new-tokens: give one");
  }
  constexpr int64_t kI32Min = INT32_MIN, kI32Max = INT32_MAX;
  auto max_new = OptionalInt(args, args.Has("max-tokens") ? "max-tokens" : "max-new-tokens", kI32Min, kI32Max);
  auto min_tokens = OptionalInt(args, "min-tokens", kI32Min, kI32Max);
  auto top_k = OptionalInt(args, "top-k", kI32Min, kI32Max);
  auto logprobs = OptionalInt(args, "logprobs", kI32Min, kI32Max);
  auto n = OptionalInt(args, "n", kI32Min, kI32Max);
  auto seed = OptionalUint64(args, "seed");
  auto temperature = OptionalFloat(args, "temperature");
  auto top_p = OptionalFloat(args, "top-p");
  auto min_p = OptionalFloat(args, "min-p");
  auto repetition = OptionalFloat(args, "repetition-penalty");
  auto presence = OptionalFloat(args, "presence-penalty");
  auto frequency = OptionalFloat(args, "frequency-penalty");
  for (const absl::Status& st : {max_new.status(), min_tokens.status(), top_k.status(), logprobs.status(), n.status(),
                                 seed.status(), temperature.status(), top_p.status(), min_p.status(),
                                 repetition.status(), presence.status(), frequency.status()}) {
    if (!st.ok()) return CommandUsageError("generate", std::string(st.message()));
  }
  // 0 in the request means "unset" (16 tokens); a user who typed 0 asked for something else.
  if (*max_new && **max_new == 0)
    return CommandUsageError("generate", "--max-new-tokens must be at least 1 (omit it for the default, 16)");
  if (*n && **n == 0) return CommandUsageError("generate", "--n must be at least 1 (omit it for the default, 1)");
  if (*max_new) req.set_max_new_tokens(static_cast<int32_t>(**max_new));
  if (*min_tokens) req.set_min_tokens(static_cast<int32_t>(**min_tokens));
  if (*logprobs) req.set_logprobs(static_cast<int32_t>(**logprobs));
  if (*n) req.set_n(static_cast<int32_t>(**n));
  SamplingParams* sp = req.mutable_sampling();
  if (*top_k) sp->set_top_k(static_cast<int32_t>(**top_k));
  if (*seed) sp->set_seed(**seed);
  if (*temperature) sp->set_temperature(**temperature);
  if (*top_p) sp->set_top_p(**top_p);
  if (*min_p) sp->set_min_p(**min_p);
  if (*repetition) sp->set_repetition_penalty(**repetition);
  if (*presence) sp->set_presence_penalty(**presence);
  if (*frequency) sp->set_frequency_penalty(**frequency);
  for (const std::string& stop : args.GetAll("stop")) {
    if (auto bad = FirstInvalidUtf8(stop))
      return CommandUsageError("generate", "--stop is not valid UTF-8 (byte " + std::to_string(*bad) + ")");
    req.add_stop(stop);
  }
  for (const std::string& list : args.GetAll("stop-token-id")) {
    auto ids = ParseIdList("stop-token-id", list);
    if (!ids.ok()) return CommandUsageError("generate", std::string(ids.status().message()));
    req.mutable_stop_token_ids()->Add(ids->begin(), ids->end());
  }
  if (args.Has("ignore-eos")) req.set_ignore_eos(true);

  // One completion streams; several are printed whole as each finishes (their messages interleave).
  const bool streaming = !cli.json && req.n() <= 1;
  const bool show_logprobs = req.has_logprobs() && !cli.json;
  TextOut out(cli.stdout_is_tty);

  grpc::ClientContext ctx;
  // The global --timeout (default 60 s) is for unary calls; a generation has a deadline only when
  // --timeout is given.
  cli.Prepare(&ctx, args.Has("timeout"));
  InterruptWatcher interrupt([&ctx] { ctx.TryCancel(); });
  const Clock::time_point start = Clock::now();
  std::optional<Clock::time_point> first_token;
  auto reader = cli.inference->Generate(&ctx, req);
  std::map<int, Completion> completions;
  std::string served_model;
  GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (!first_token.has_value() && resp.token_ids_size() > 0) first_token = Clock::now();
    if (!resp.model().empty()) served_model = resp.model();
    Completion& c = completions[resp.index()];
    c.index = resp.index();
    if (c.messages++ == 0) c.seed = resp.seed();
    c.tokens += resp.token_ids_size();
    if (show_logprobs) c.logprobs.insert(c.logprobs.end(), resp.logprobs().begin(), resp.logprobs().end());
    if (cli.json) {
      cli.PrintJson(resp, /*with_defaults=*/true);
    } else if (streaming) {
      out.Write(resp.text());
    } else {
      c.text += resp.text();
    }
    if (!resp.finish_reason().empty()) {
      c.finished = true;
      c.finish_reason = resp.finish_reason();
      c.stop_string = resp.stop_string();
      c.prompt_tokens = resp.prompt_tokens();
      c.completion_tokens = resp.completion_tokens();
      if (!cli.json && !streaming) PrintCompletionBlock(out, c, show_logprobs);
    }
  }
  const grpc::Status status = reader->Finish();
  const Clock::time_point end = Clock::now();
  const bool interrupted = interrupt.interrupted();

  if (!cli.json) {
    if (streaming) {
      out.EndLineOnTerminal();
      if (show_logprobs) {
        for (const auto& [index, c] : completions) {
          out.EndLine();
          PrintLogprobs(out, c);
        }
      }
    } else {
      for (const auto& [index, c] : completions) {
        if (!c.finished) PrintCompletionBlock(out, c, show_logprobs);  // cut short by an error or Ctrl-C
      }
    }
  }

  int64_t tokens = 0;
  for (const auto& [index, c] : completions) tokens += c.finished ? c.completion_tokens : c.tokens;
  if (interrupted) {
    std::fprintf(stderr, "generate: cancelled (interrupt) after %lld tokens in %.3f s\n",
                 static_cast<long long>(tokens), Seconds(end - start));
    return kExitInterrupted;
  }
  if (!status.ok()) {
    ReportError(FromGrpcStatus(status));
    return kExitError;  // a server's INVALID_ARGUMENT is not a usage error of mqctl
  }
  if (!cli.json) {
    std::vector<std::string> finish, counts, seeds;
    int32_t prompt_tokens = 0;
    for (const auto& [index, c] : completions) {
      finish.push_back(c.finished ? SanitizeTerminalText(c.finish_reason, false) : "unfinished");
      counts.push_back(absl::StrCat(c.finished ? c.completion_tokens : c.tokens));
      seeds.push_back(absl::StrCat(c.seed));
      prompt_tokens = std::max(prompt_tokens, c.prompt_tokens);
    }
    std::string line = absl::StrCat("finish=", absl::StrJoin(finish, ","));
    if (completions.size() == 1 && !completions.begin()->second.stop_string.empty()) {
      absl::StrAppend(&line, " stop_string=", QuoteForTerminal(completions.begin()->second.stop_string));
    }
    const double wall = Seconds(end - start);
    absl::StrAppend(&line, " prompt_tokens=", prompt_tokens, " completion_tokens=", absl::StrJoin(counts, ","),
                    " seed=", absl::StrJoin(seeds, ","),
                    " model=", served_model.empty() ? "-" : SanitizeTerminalText(served_model, false),
                    absl::StrFormat(" time=%.3fs", wall));
    if (first_token.has_value()) absl::StrAppend(&line, absl::StrFormat(" ttft=%.3fs", Seconds(*first_token - start)));
    absl::StrAppend(&line, absl::StrFormat(" tokens/s=%.1f", wall > 0 ? static_cast<double>(tokens) / wall : 0.0));
    // stdout and stderr into one file or pipe (2>&1, a log): the summary starts its own line
    // without adding a byte to the text stdout carries when it goes elsewhere.
    const bool glued = !out.at_line_start() && SameOpenFile(STDOUT_FILENO, STDERR_FILENO);
    std::fprintf(stderr, "%s%s\n", glued ? "\n" : "", line.c_str());
  }
  return kExitOk;
}

}  // namespace mq::cli
