#include "rpc_metrics_interceptor.h"

#include <chrono>
#include <string>

#include "rpc_roles.h"

namespace mq::server {
namespace {

class RpcMetricsInterceptor : public grpc::experimental::Interceptor {
 public:
  RpcMetricsInterceptor(ServerMetrics* metrics, const char* method)
      : metrics_(metrics), method_(method ? method : "unknown"), start_(std::chrono::steady_clock::now()) {}

  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_STATUS)) {
      double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
      metrics_->RecordRpc(method_, static_cast<int>(methods->GetSendStatus().error_code()), seconds);
    }
    methods->Proceed();
  }

 private:
  ServerMetrics* metrics_;
  std::string method_;
  std::chrono::steady_clock::time_point start_;
};

}  // namespace

grpc::experimental::Interceptor* RpcMetricsInterceptorFactory::CreateServerInterceptor(
    grpc::experimental::ServerRpcInfo* info) {
  // The method label only takes the methods this server serves (the role table lists each one):
  // a client calling made-up paths would otherwise add a label value — 12 series — per path, for
  // ever (3000 calls made the page 74 MB). Any other path counts as "unknown".
  const char* method = info->method();
  if (method == nullptr || !AccessFor(method).has_value()) method = "unknown";
  return new RpcMetricsInterceptor(metrics_, method);
}

}  // namespace mq::server
