// mqctl generate MODEL --prompt TEXT: streams generated text (the server answers UNIMPLEMENTED
// until inference lands).
#include <cstdio>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "grpc_status.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

int RunGenerateCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  std::set<std::string> allowed = {"prompt", "max-tokens", "temperature"};
  allowed.insert(GlobalOptions().begin(), GlobalOptions().end());
  absl::Status s = args.AllowOnly(allowed);
  if (!s.ok()) return ReportError(s);
  if (words.size() != 1) return UsageError("generate takes a model reference");
  auto max_tokens = args.GetInt("max-tokens", 128, 1, 4096);
  if (!max_tokens.ok()) return ReportError(max_tokens.status());
  GenerateRequest req;
  req.set_model(words[0]);
  req.set_prompt(args.GetOr("prompt", ""));
  req.set_max_new_tokens(static_cast<int32_t>(*max_tokens));
  req.mutable_sampling()->set_temperature(std::stof(args.GetOr("temperature", "0")));
  grpc::ClientContext ctx;
  cli.Prepare(&ctx, false);
  auto reader = cli.inference->Generate(&ctx, req);
  GenerateResponse resp;
  while (reader->Read(&resp)) {
    if (cli.json) {
      cli.PrintJson(resp);
    } else {
      std::fputs(resp.text().c_str(), stdout);
      std::fflush(stdout);
    }
  }
  s = FromGrpcStatus(reader->Finish());
  if (!cli.json) std::printf("\n");
  if (!s.ok()) return ReportError(s);
  return kExitOk;
}

}  // namespace mq::cli
