// Counts every RPC the server finishes, with its method, status code and duration, without each
// handler having to remember to.
#pragma once

#include <grpcpp/support/server_interceptor.h>

#include "server_metrics.h"

namespace mq::server {

class RpcMetricsInterceptorFactory : public grpc::experimental::ServerInterceptorFactoryInterface {
 public:
  explicit RpcMetricsInterceptorFactory(ServerMetrics* metrics) : metrics_(metrics) {}
  grpc::experimental::Interceptor* CreateServerInterceptor(grpc::experimental::ServerRpcInfo* info) override;

 private:
  ServerMetrics* metrics_;
};

}  // namespace mq::server
