// Names read from model files that become map keys, messages or file names: a restricted
// charset, bounded length, and for file names no way out of the model's directory.
#pragma once

#include <string_view>

#include "util/status.h"

namespace mq::format {

// Tensor names: 1..kMaxTensorNameBytes of [A-Za-z0-9._-/:], as every Hugging Face checkpoint uses
// ("backbone.layers.0.mixer.A_log"). `what` prefixes the message.
Status CheckTensorName(std::string_view name, std::string_view what);

// A plain file name inside a model directory: 1..kMaxFileNameBytes of [A-Za-z0-9._-], not "."
// or "..", no separator, so joining it to the directory stays inside it.
Status CheckPlainFileName(std::string_view name, std::string_view what);

// A bounded, printable rendering of untrusted text for error messages.
std::string Printable(std::string_view text);

}  // namespace mq::format
