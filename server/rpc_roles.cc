#include "rpc_roles.h"

#include <array>

namespace mq::server {
namespace {

constexpr RoleMask kAdmin = RoleBit(Role::kAdmin);
constexpr RoleMask kReaders = RoleBit(Role::kAdmin) | RoleBit(Role::kOperator);
constexpr RoleMask kInference = RoleBit(Role::kAdmin) | RoleBit(Role::kInference);
constexpr RoleMask kWorker = RoleBit(Role::kWorker);
constexpr RoleMask kAnyClient = RoleBit(Role::kAdmin) | RoleBit(Role::kOperator) | RoleBit(Role::kInference);

struct Entry {
  const char* method;
  bool open;
  RoleMask roles;
};

// THE table. Adding an RPC to a proto without adding it here leaves it denied (and fails
// auth_test, which checks every method of the services' descriptors is here).
constexpr Entry kTable[] = {
    // Registry: writes and deletes are an administrator's; reading is for operators too.
    {"/mambaquant.v1.RegistryService/CreateUpload", false, kAdmin},
    {"/mambaquant.v1.RegistryService/GetUpload", false, kAdmin},
    {"/mambaquant.v1.RegistryService/UploadChunks", false, kAdmin},
    {"/mambaquant.v1.RegistryService/CommitUpload", false, kAdmin},
    {"/mambaquant.v1.RegistryService/AbortUpload", false, kAdmin},
    {"/mambaquant.v1.RegistryService/DeleteArtifact", false, kAdmin},
    {"/mambaquant.v1.RegistryService/GetArtifact", false, kReaders},
    {"/mambaquant.v1.RegistryService/ListArtifacts", false, kReaders},
    {"/mambaquant.v1.RegistryService/ReadFile", false, kReaders},
    // Jobs: operators submit, watch and cancel.
    {"/mambaquant.v1.JobService/SubmitJob", false, kReaders},
    {"/mambaquant.v1.JobService/GetJob", false, kReaders},
    {"/mambaquant.v1.JobService/ListJobs", false, kReaders},
    {"/mambaquant.v1.JobService/CancelJob", false, kReaders},
    {"/mambaquant.v1.JobService/WatchJob", false, kReaders},
    // Cluster state (read only).
    {"/mambaquant.v1.ClusterService/ListWorkers", false, kReaders},
    {"/mambaquant.v1.ClusterService/GetServerStatus", false, kReaders},
    // Inference.
    {"/mambaquant.v1.InferenceService/Generate", false, kInference},
    {"/mambaquant.v1.InferenceService/Score", false, kInference},
    {"/mambaquant.v1.InferenceService/Classify", false, kInference},
    // KServe v2 (Triton's proto): inference, except loading and unloading models on workers and
    // changing server settings, which are an administrator's.
    {"/inference.GRPCInferenceService/ServerLive", false, kInference},
    {"/inference.GRPCInferenceService/ServerReady", false, kInference},
    {"/inference.GRPCInferenceService/ModelReady", false, kInference},
    {"/inference.GRPCInferenceService/ServerMetadata", false, kInference},
    {"/inference.GRPCInferenceService/ModelMetadata", false, kInference},
    {"/inference.GRPCInferenceService/ModelInfer", false, kInference},
    {"/inference.GRPCInferenceService/ModelStreamInfer", false, kInference},
    {"/inference.GRPCInferenceService/ModelConfig", false, kInference},
    {"/inference.GRPCInferenceService/ModelStatistics", false, kInference},
    {"/inference.GRPCInferenceService/RepositoryIndex", false, kInference},
    {"/inference.GRPCInferenceService/RepositoryModelLoad", false, kAdmin},
    {"/inference.GRPCInferenceService/RepositoryModelUnload", false, kAdmin},
    {"/inference.GRPCInferenceService/SystemSharedMemoryStatus", false, kInference},
    {"/inference.GRPCInferenceService/SystemSharedMemoryRegister", false, kInference},
    {"/inference.GRPCInferenceService/SystemSharedMemoryUnregister", false, kInference},
    {"/inference.GRPCInferenceService/CudaSharedMemoryStatus", false, kInference},
    {"/inference.GRPCInferenceService/CudaSharedMemoryRegister", false, kInference},
    {"/inference.GRPCInferenceService/CudaSharedMemoryUnregister", false, kInference},
    {"/inference.GRPCInferenceService/TraceSetting", false, kAdmin},
    {"/inference.GRPCInferenceService/LogSettings", false, kAdmin},
    // The internal worker API: workers only (on the mTLS worker port, the certificate instead).
    {"/mambaquant.v1.WorkerService/RegisterWorker", false, kWorker},
    {"/mambaquant.v1.WorkerService/Heartbeat", false, kWorker},
    {"/mambaquant.v1.WorkerService/AcquireJob", false, kWorker},
    {"/mambaquant.v1.WorkerService/ReportProgress", false, kWorker},
    {"/mambaquant.v1.WorkerService/FetchBlob", false, kWorker},
    {"/mambaquant.v1.WorkerService/StartResultUpload", false, kWorker},
    {"/mambaquant.v1.WorkerService/UploadResultChunks", false, kWorker},
    {"/mambaquant.v1.WorkerService/FinishJob", false, kWorker},
    {"/mambaquant.v1.WorkerService/Deregister", false, kWorker},
    {"/mambaquant.v1.WorkerService/Serve", false, kWorker},
    // Reflection describes the public API: any client role (it reveals no data).
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", false, kAnyClient},
    // Health stays open for probes.
    {"/grpc.health.v1.Health/Check", true, 0},
    {"/grpc.health.v1.Health/Watch", true, 0},
};

constexpr std::array<const char*, 4> kRoleNames = {"admin", "operator", "inference", "worker"};

}  // namespace

std::optional<Role> ParseRole(absl::string_view name) {
  for (size_t i = 0; i < kRoleNames.size(); ++i) {
    if (name == kRoleNames[i]) return static_cast<Role>(i);
  }
  return std::nullopt;
}

const char* RoleName(Role role) { return kRoleNames[static_cast<size_t>(role)]; }

std::optional<MethodAccess> AccessFor(absl::string_view method) {
  for (const Entry& e : kTable) {
    if (method == e.method) return MethodAccess{e.open, e.roles};
  }
  return std::nullopt;
}

std::vector<std::string> MethodsInRoleTable() {
  std::vector<std::string> out;
  for (const Entry& e : kTable) out.emplace_back(e.method);
  return out;
}

bool IsWorkerApiMethod(absl::string_view method) {
  constexpr absl::string_view kPrefix = "/mambaquant.v1.WorkerService/";
  return method.substr(0, kPrefix.size()) == kPrefix;
}

}  // namespace mq::server
