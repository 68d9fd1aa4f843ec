#include "cli_context.h"

#include <cstdio>

#include <google/protobuf/util/json_util.h>

#include "absl/strings/str_format.h"
#include "absl/time/time.h"
#include "credentials.h"
#include "terminal_text.h"

namespace mq::cli {

const std::set<std::string>& GlobalOptions() {
  static const std::set<std::string>* options = new std::set<std::string>{
      "server", "insecure", "token", "token-file", "tls-ca", "tls-server-name", "json", "timeout", "help"};
  return *options;
}

void CliContext::Prepare(grpc::ClientContext* ctx, bool with_deadline) const {
  PrepareClientContext(ctx, token, with_deadline ? timeout : absl::ZeroDuration());
}

void CliContext::PrintJson(const google::protobuf::Message& message, bool with_defaults) const {
  google::protobuf::util::JsonPrintOptions options;
  options.preserve_proto_field_names = true;
  options.always_print_primitive_fields = with_defaults;
  std::string out;
  (void)google::protobuf::util::MessageToJsonString(message, &out, options);
  std::printf("%s\n", out.c_str());
  std::fflush(stdout);
}

int ReportError(const absl::Status& status) {
  // Messages may quote what the server was sent (names, stop strings): no raw control characters,
  // and no newline that could forge a line of output.
  std::fprintf(stderr, "error: %s: %s\n", absl::StatusCodeToString(status.code()).c_str(),
               SanitizeTerminalText(status.message(), /*keep_newlines=*/false).c_str());
  // A TLS client meeting a plaintext server fails its handshake with "wrong version number" (or
  // "packet length too long"): say what to do instead of leaving the OpenSSL text to decode.
  if (status.code() == absl::StatusCode::kUnavailable &&
      (status.message().find("wrong version number") != absl::string_view::npos ||
       status.message().find("packet length too long") != absl::string_view::npos)) {
    std::fprintf(stderr, "hint: the server speaks plaintext (mq-server --insecure): add --insecure, or start the "
                         "server with --tls-cert/--tls-key\n");
  }
  return status.code() == absl::StatusCode::kInvalidArgument && status.message().find("--") != absl::string_view::npos
             ? kExitUsage
             : kExitError;
}

int UsageError(const std::string& message) {
  std::fprintf(stderr, "usage error: %s (see mqctl --help)\n", message.c_str());
  return kExitUsage;
}

std::string FormatBytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%d B", bytes) : absl::StrFormat("%.1f %s", v, units[u]);
}

std::string FormatTime(int64_t unix_seconds) {
  if (unix_seconds == 0) return "-";
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixSeconds(unix_seconds), absl::LocalTimeZone());
}

}  // namespace mq::cli
