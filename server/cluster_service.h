// mambaquant.v1.ClusterService: the workers the server knows (membership from the worker store,
// serving state from the inference router) and the server's own status, for operators (mqctl
// workers list, mqctl server status).
#pragma once

#include "absl/time/time.h"
#include "mambaquant/v1/cluster.grpc.pb.h"
#include "service_deps.h"

namespace mq::server {

class ClusterServiceImpl final : public mambaquant::v1::ClusterService::CallbackService {
 public:
  ClusterServiceImpl(ServiceDeps deps, absl::Time start_time) : deps_(deps), start_time_(start_time) {}
  grpc::ServerUnaryReactor* ListWorkers(grpc::CallbackServerContext* ctx, const mambaquant::v1::ListWorkersRequest* req,
                                        mambaquant::v1::ListWorkersResponse* resp) override;
  grpc::ServerUnaryReactor* GetServerStatus(grpc::CallbackServerContext* ctx,
                                            const mambaquant::v1::GetServerStatusRequest* req,
                                            mambaquant::v1::ServerStatus* resp) override;

 private:
  ServiceDeps deps_;
  const absl::Time start_time_;
};

}  // namespace mq::server
