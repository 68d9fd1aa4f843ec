// The mq-engine subcommands; each returns the process exit code.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "serve/sequence_backend.h"

namespace mq::tools {

// Opens a model directory on `device` ("cpu" or "cuda") as the worker serves it
// (tools/generate_command.cc).
StatusOr<std::unique_ptr<serve::SequenceBackend>> OpenSequenceBackend(const std::string& device, const std::string& dir,
                                                                     const serve::SequenceBackendOptions& o);

int RunEvalCommand(const std::vector<std::string>& args);
int RunGenerateCommand(const std::vector<std::string>& args);
int RunTokenizeCommand(const std::vector<std::string>& args);
int RunQuantizeCommand(const std::vector<std::string>& args);
int RunQualityTableCommand(const std::vector<std::string>& args);
int RunMakeModelCommand(const std::vector<std::string>& args);
int RunClassifyCommand(const std::vector<std::string>& args);
// `quantize` for a Vim model (tools/quantize_vim_command.cc); -1 when --model is not one.
int MaybeRunQuantizeVimCommand(const std::vector<std::string>& args);
int RunTransformCommand(const std::vector<std::string>& args);

}  // namespace mq::tools
