// Per-command help of mqctl ("mqctl jobs --help", "mqctl help models"): what each command does,
// its arguments and options with their defaults. generate, score and classify have their own
// (GenerateHelp and the like, next to their option parsers).
#pragma once

#include "absl/strings/string_view.h"

namespace mq::cli {

// The help text of a command group (models, datasets, jobs, workers, server, tokens), or null
// when it has none here.
const char* CommandHelp(absl::string_view command);

}  // namespace mq::cli
