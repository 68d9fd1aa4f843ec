// The components the RPC services share. Owned by MqServer; services hold a copy of this struct.
#pragma once

#include <cstdint>

#include <grpcpp/support/server_callback.h>
#include <grpcpp/server_context.h>

#include "absl/status/status.h"
#include "auth.h"
#include "grpc_status.h"
#include "job_event_hub.h"
#include "job_store.h"
#include "registry.h"
#include "scheduler.h"
#include "server_metrics.h"
#include "upload_manager.h"
#include "worker_store.h"

namespace mq::server {

class InferenceRouter;

struct ServiceDeps {
  Authenticator* auth = nullptr;
  Registry* registry = nullptr;
  RegistryStore* registry_store = nullptr;
  UploadManager* uploads = nullptr;
  JobStore* jobs = nullptr;
  WorkerStore* workers = nullptr;
  Scheduler* scheduler = nullptr;
  JobEventHub* hub = nullptr;
  ServerMetrics* metrics = nullptr;  // may be null
  InferenceRouter* router = nullptr;
  absl::Duration lease = absl::Seconds(15);
  int max_attempts = 3;
  int64_t max_queued_jobs = 10000;
};

// Finishes a unary call with `status` (the response must already be filled when OK).
inline grpc::ServerUnaryReactor* Reply(grpc::CallbackServerContext* ctx, const absl::Status& status) {
  grpc::ServerUnaryReactor* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(status));
  return reactor;
}

}  // namespace mq::server
