// mqctl: the command-line client of mq-server.
#include <unistd.h>

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "cli_args.h"
#include "cli_context.h"
#include "command_help.h"
#include "commands/commands.h"
#include "credentials.h"

namespace mq::cli {

const std::set<std::string>& CommandBoolOptions() {
  static const std::set<std::string>* o =
      new std::set<std::string>{"insecure", "json", "help", "wait", "quantize-lm-head", "ignore-eos", "new-version"};
  return *o;
}

const std::set<std::string>& CommandValueOptions() {
  static const std::set<std::string>* o = new std::set<std::string>{
      "server", "token", "token-file", "tls-ca", "tls-server-name", "timeout",                  // global
      "name", "version", "description", "label", "resume", "limit", "page-token", "out",       // registry
      "model", "preset", "bits", "scope", "act", "calib", "samples", "seq-len", "seed", "eval",  // jobs
      "eval-window", "output-name", "backend", "disable", "state", "prompt", "max-tokens", "temperature",
      "act-percentile", "smooth-alpha", "r1-covariance", "weight-clip", "state-granularity", "tolerable-loss",
      "w8-layers",
      "prompt-ids", "max-new-tokens", "min-tokens", "top-k", "top-p", "min-p", "repetition-penalty",  // generate
      "presence-penalty", "frequency-penalty", "stop", "stop-token-id", "logprobs", "n",
      "text", "file", "top-logprobs",                                                              // score
      "images", "prefix",                                                                          // classify
      "role"};                                                                                     // tokens
  return *o;
}

namespace {

constexpr char kUsage[] = R"(mqctl: client of the MambaQuant server

usage: mqctl [global options] <command> [arguments] [options]

commands:
  models upload DIR --name NAME [--version N] [--description D] [--label K=V]... [--resume UPLOAD_ID]
  models list [--name NAME] [--limit N] [--page-token T]
  models get NAME[:VERSION]
  models download NAME[:VERSION] --out DIR
  models delete NAME:VERSION
  datasets upload FILE --name NAME [...]      (same options as models upload)
  datasets list | get | download | delete     (as for models)
  jobs submit --model REF --calib DATASET [--preset rtn|smoothquant|quarot|mambaquant] [--bits w8a8|w4a8]
              [--scope linear|full] [--act per_token|per_tensor] [--samples N] [--seq-len L] [--seed S]
              [--eval DATASET] [--eval-window W] [--output-name NAME] [--backend cpu|cuda]
              [--disable klt_r1|klt_r5|online_r2|smooth_s2|smooth_s4]... [--act-percentile P] [--smooth-alpha A]
              [--quantize-lm-head] [--r1-covariance all_layers|layer0] [--weight-clip auto|max|mse]
              [--state-granularity per_step_channel|per_step] [--tolerable-loss PCT] [--w8-layers L,L,...] [--wait]
  jobs get JOB_ID | jobs cancel JOB_ID | jobs watch JOB_ID
  jobs list [--state S[,S...]] [--model NAME] [--limit N] [--page-token T]
  generate --model NAME[:VERSION] (--prompt TEXT | --prompt-ids 1,2,3) [--max-new-tokens N]
              [--min-tokens N] [--temperature F] [--top-k N] [--top-p F] [--min-p F]
              [--repetition-penalty F] [--presence-penalty F] [--frequency-penalty F] [--seed N]
              [--stop STR]... [--stop-token-id N]... [--ignore-eos] [--logprobs N] [--n N]
                                              (mqctl generate --help for details)
  score --model NAME[:VERSION] (--text TEXT | --file PATH) [--top-logprobs N]
                                              (mqctl score --help for details)
  classify --model NAME[:VERSION] --images FILE.safetensors [--prefix P] [--top-k K]
                                              (mqctl classify --help for details)
  workers list                                workers: device, memory, slots, lease, loaded models
  server status                               version, uptime, workers, loaded models
  tokens mint --role admin|operator|inference|worker [--name N]
                                              a new token and its --tokens-file line (local)

  mqctl COMMAND --help (or mqctl help COMMAND) describes a command and its options.

global options:
  --server ADDR        server address (default $MQ_SERVER, else localhost:7070)
  --token T            bearer token (default: --token-file, else $MQ_TOKEN)
  --token-file F       file holding the token
  --tls-ca F           PEM CA bundle to verify the server (default: system roots)
  --tls-server-name N  name expected in the server certificate
  --insecure           plaintext without a token (local development servers)
  --timeout SECONDS    per-call deadline for unary calls (default 60)
  --json               machine-readable output (one JSON object per line)

exit codes: 0 ok, 1 call failed, 2 usage error, 3 a waited-for job ended FAILED or CANCELLED,
            130 generate/score cancelled by Ctrl-C
)";

}  // namespace
}  // namespace mq::cli

int main(int argc, char** argv) {
  using namespace mq::cli;  // NOLINT
  auto args = Args::Parse(argc, argv, CommandBoolOptions(), CommandValueOptions());
  if (!args.ok()) return UsageError(std::string(args.status().message()));
  const auto& words = args->positionals();
  // Commands with their own help: "mqctl generate --help", "mqctl help generate".
  const bool wants_help = args->Has("help") || (!words.empty() && words[0] == "help");
  std::string help_topic = words.empty() ? "" : words[0];
  if (help_topic == "help") help_topic = words.size() > 1 ? words[1] : "";
  if (wants_help && help_topic == "generate") {
    std::fputs(GenerateHelp(), stdout);
    return kExitOk;
  }
  if (wants_help && help_topic == "classify") {
    std::fputs(ClassifyHelp(), stdout);
    return kExitOk;
  }
  if (wants_help && help_topic == "score") {
    std::fputs(ScoreHelp(), stdout);
    return kExitOk;
  }
  if (wants_help) {
    if (const char* text = CommandHelp(help_topic)) {  // models, datasets, jobs, workers, server, tokens
      std::fputs(text, stdout);
      return kExitOk;
    }
  }
  if (args->Has("help") || words.empty() || words[0] == "help") {
    std::fputs(kUsage, stdout);
    return words.empty() && !args->Has("help") ? kExitUsage : kExitOk;
  }

  // Local commands (no server).
  if (words[0] == "tokens") return RunTokensCommand(*args, std::vector<std::string>(words.begin() + 1, words.end()));

  CliContext cli;
  cli.json = args->Has("json");
  cli.stdout_is_tty = ::isatty(STDOUT_FILENO) == 1;
  cli.stderr_is_tty = ::isatty(STDERR_FILENO) == 1;
  auto timeout = args->GetInt("timeout", 60, 1, 86400);
  if (!timeout.ok()) return ReportError(timeout.status());
  cli.timeout = absl::Seconds(*timeout);
  std::string server = args->GetOr("server", "");
  if (server.empty()) {
    const char* env = std::getenv("MQ_SERVER");
    server = env != nullptr && *env ? env : "localhost:7070";
  }
  mq::ClientTlsOptions tls;
  tls.insecure = args->Has("insecure");
  tls.ca_file = args->GetOr("tls-ca", "");
  tls.server_name_override = args->GetOr("tls-server-name", "");
  if (!tls.insecure) {
    auto token = mq::ResolveToken(args->GetOr("token", ""), args->GetOr("token-file", ""), "MQ_TOKEN");
    if (!token.ok()) return ReportError(token.status());
    cli.token = *token;
  }
  auto channel = mq::MakeChannel(server, tls);
  if (!channel.ok()) return ReportError(channel.status());
  cli.channel = *channel;
  cli.registry = mambaquant::v1::RegistryService::NewStub(cli.channel);
  cli.jobs = mambaquant::v1::JobService::NewStub(cli.channel);
  cli.inference = mambaquant::v1::InferenceService::NewStub(cli.channel);

  std::vector<std::string> rest(words.begin() + 1, words.end());
  const std::string& group = words[0];
  if (group == "models") return RunModelsCommand(cli, *args, rest);
  if (group == "datasets") return RunDatasetsCommand(cli, *args, rest);
  if (group == "jobs") return RunJobsCommand(cli, *args, rest);
  if (group == "generate") return RunGenerateCommand(cli, *args, rest);
  if (group == "score") return RunScoreCommand(cli, *args, rest);
  if (group == "classify") return RunClassifyCommand(cli, *args, rest);
  if (group == "workers") return RunWorkersCommand(cli, *args, rest);
  if (group == "server") return RunServerCommand(cli, *args, rest);
  return UsageError(absl::StrCat("unknown command \"", group, "\""));
}
