#include "cluster_service.h"

#include <algorithm>
#include <set>

#include "absl/time/clock.h"
#include "inference_router.h"
#include "proto_time.h"

namespace mq::server {

using namespace mambaquant::v1;  // NOLINT

grpc::ServerUnaryReactor* ClusterServiceImpl::ListWorkers(grpc::CallbackServerContext* ctx, const ListWorkersRequest*,
                                                          ListWorkersResponse* resp) {
  absl::Status s;
  auto records = deps_.workers->List();
  if (!records.ok()) return Reply(ctx, records.status());
  std::sort(records->begin(), records->end(), [](const WorkerRecord& a, const WorkerRecord& b) { return a.registered > b.registered; });
  const auto serving = deps_.router->ConnectedWorkers();
  const absl::Time now = absl::Now();
  for (const WorkerRecord& r : *records) {
    if (r.lease_expires < now) continue;  // dropped at the scheduler's next sweep
    WorkerInfo* w = resp->add_workers();
    w->set_worker_id(r.id);
    w->set_name(r.info.name());
    w->set_address(r.info.address());
    w->set_backend(r.info.backend());
    w->set_device_name(r.info.device_name());
    w->set_memory_bytes(r.info.memory_bytes());
    w->set_max_concurrent_jobs(r.info.max_concurrent_jobs());
    w->set_version(r.info.version());
    SetTimestamp(r.registered, w->mutable_registered());
    SetTimestamp(r.lease_expires, w->mutable_lease_expires());
    auto it = serving.find(r.id);
    if (it != serving.end()) {
      w->set_inference_connected(true);
      *w->mutable_capacity() = it->second.capacity;
      *w->mutable_load() = it->second.load;
    }
  }
  return Reply(ctx, absl::OkStatus());
}

grpc::ServerUnaryReactor* ClusterServiceImpl::GetServerStatus(grpc::CallbackServerContext* ctx, const GetServerStatusRequest*,
                                                              ServerStatus* resp) {
  absl::Status s;
  auto records = deps_.workers->List();
  if (!records.ok()) return Reply(ctx, records.status());
  const absl::Time now = absl::Now();
  resp->set_version(MQ_SERVER_VERSION);
  SetTimestamp(start_time_, resp->mutable_start_time());
  resp->set_uptime_seconds(absl::ToDoubleSeconds(now - start_time_));
  resp->set_workers(static_cast<int32_t>(std::count_if(records->begin(), records->end(),
                                                       [&](const WorkerRecord& r) { return r.lease_expires >= now; })));
  const auto serving = deps_.router->ConnectedWorkers();
  resp->set_inference_workers(static_cast<int32_t>(serving.size()));
  std::set<std::string> models;
  for (const auto& [id, w] : serving)
    for (const auto& m : w.load.models()) models.insert(m.model());
  for (const auto& m : models) resp->add_loaded_models(m);
  return Reply(ctx, absl::OkStatus());
}

}  // namespace mq::server
