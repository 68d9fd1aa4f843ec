// Who may call what: the roles a bearer token can carry and the one table that maps every RPC
// method the server serves to the roles allowed to call it. The auth processor (auth.h) is the
// only place that enforces it; a method missing from the table is denied to everyone.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include "absl/strings/string_view.h"
#include <vector>

namespace mq::server {

enum class Role : uint8_t {
  kAdmin = 0,      // registry writes and deletes, worker administration, everything an operator can
  kOperator = 1,   // submit and cancel jobs, read the registry and the cluster
  kInference = 2,  // Generate, Score, Classify and the KServe inference protocol only
  kWorker = 3,     // the internal worker API only
};

using RoleMask = uint32_t;
constexpr RoleMask RoleBit(Role r) { return RoleMask{1} << static_cast<uint8_t>(r); }

// "admin" | "operator" | "inference" | "worker".
std::optional<Role> ParseRole(absl::string_view name);
const char* RoleName(Role role);

struct MethodAccess {
  // No token needed (the gRPC health service: probes carry no credentials).
  bool open = false;
  RoleMask roles = 0;
};

// `method` is the gRPC path "/package.Service/Method". nullopt: not in the table (deny).
std::optional<MethodAccess> AccessFor(absl::string_view method);

// Every method the table names (tests check it covers each registered service's methods).
std::vector<std::string> MethodsInRoleTable();

// The prefix of the internal worker API's methods ("/mambaquant.v1.WorkerService/").
bool IsWorkerApiMethod(absl::string_view method);

}  // namespace mq::server
