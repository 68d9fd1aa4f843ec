// What every mqctl command shares: stubs, credentials, the per-call timeout, output mode.
#pragma once

#include <memory>
#include <set>
#include <string>

#include <google/protobuf/message.h>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "cli_args.h"
#include "mambaquant/v1/inference.grpc.pb.h"
#include "mambaquant/v1/jobs.grpc.pb.h"
#include "mambaquant/v1/registry.grpc.pb.h"

namespace mq::cli {

// Exit codes.
inline constexpr int kExitOk = 0;
inline constexpr int kExitError = 1;      // the call failed
inline constexpr int kExitUsage = 2;      // bad command line
inline constexpr int kExitJobFailed = 3;  // a waited-for job ended FAILED or CANCELLED

// Options every command accepts.
const std::set<std::string>& GlobalOptions();

struct CliContext {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<mambaquant::v1::RegistryService::Stub> registry;
  std::unique_ptr<mambaquant::v1::JobService::Stub> jobs;
  std::unique_ptr<mambaquant::v1::InferenceService::Stub> inference;
  std::string token;
  absl::Duration timeout = absl::Seconds(60);
  bool json = false;
  bool stdout_is_tty = false;
  bool stderr_is_tty = false;

  // Token and deadline; timeout 0 means no deadline (streams that may run long).
  void Prepare(grpc::ClientContext* ctx, bool with_deadline = true) const;
  // One line of JSON with the proto field names.
  // One line of JSON (proto field names). with_defaults: every field, defaults included (index 0,
  // empty text), as scripts reading streamed messages want.
  void PrintJson(const google::protobuf::Message& message, bool with_defaults = false) const;
};

// Prints "error: CODE: message" to stderr and returns kExitError (kExitUsage for usage errors).
int ReportError(const absl::Status& status);
int UsageError(const std::string& message);

std::string FormatBytes(uint64_t bytes);
std::string FormatTime(int64_t unix_seconds);

}  // namespace mq::cli
