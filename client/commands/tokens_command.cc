// mqctl tokens mint: a new bearer token and the tokens-file line that grants it (docs/security.md).
// Local only: the server never sees the secret, only the line's digest, added to its tokens file.
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "commands.h"
#include "token_store.h"

namespace mq::cli {

int RunTokensCommand(const Args& args, const std::vector<std::string>& words) {
  if (words.size() != 1 || words[0] != "mint") return UsageError("usage: mqctl tokens mint --role R [--name N]");
  absl::Status s = args.AllowOnly({"role", "name", "json"});
  if (!s.ok()) return UsageError(std::string(s.message()));
  auto role_name = args.Require("role");
  if (!role_name.ok()) return UsageError("--role admin|operator|inference|worker is required");
  auto role = server::ParseRole(*role_name);
  if (!role.has_value()) return UsageError("--role must be admin, operator, inference or worker");
  auto token = server::MintToken();
  if (!token.ok()) return ReportError(token.status());
  std::string name = args.GetOr("name", absl::StrCat(*role_name, "-", token->substr(4, 8)));
  const std::string line = server::TokensFileLine(*token, *role, name);
  // The line is checked by the same parser the server uses, so a bad --name fails here.
  auto parsed = server::ParseTokensFile(line);
  if (!parsed.ok()) return UsageError(std::string(parsed.status().message()));
  if (args.Has("json")) {
    std::printf("{\"token\":\"%s\",\"role\":\"%s\",\"name\":\"%s\",\"tokens_file_line\":\"%s\"}\n", token->c_str(),
                role_name->c_str(), name.c_str(), line.c_str());
    return kExitOk;
  }
  std::printf("token: %s\n", token->c_str());
  std::printf("add this line to the server's --tokens-file, then send it SIGHUP:\n%s\n", line.c_str());
  std::fprintf(stderr, "the token is shown once: give it to its holder (MQ_TOKEN or --token-file); only its digest goes in the file\n");
  return kExitOk;
}

}  // namespace mq::cli
