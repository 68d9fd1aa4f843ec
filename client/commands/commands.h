// mqctl command groups. Each receives the positionals after the group name ("upload", "DIR", ...)
// and returns the process exit code.
#pragma once

#include <string>
#include <vector>

#include "cli_args.h"
#include "cli_context.h"

namespace mq::cli {

int RunModelsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunDatasetsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunJobsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunGenerateCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunScoreCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunClassifyCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunWorkersCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
int RunServerCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words);
// "tokens mint": local, needs no server.
int RunTokensCommand(const Args& args, const std::vector<std::string>& words);

// Detailed help of the commands that have their own ("mqctl generate --help").
const char* GenerateHelp();
const char* ScoreHelp();
const char* ClassifyHelp();

// Every option of every command (for parsing); booleans and options with values.
const std::set<std::string>& CommandBoolOptions();
const std::set<std::string>& CommandValueOptions();

}  // namespace mq::cli
