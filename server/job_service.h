// mambaquant.v1.JobService: submit, inspect, cancel and watch quantization jobs.
#pragma once

#include "mambaquant/v1/jobs.grpc.pb.h"
#include "service_deps.h"

namespace mq::server {

class JobServiceImpl final : public mambaquant::v1::JobService::CallbackService {
 public:
  explicit JobServiceImpl(ServiceDeps deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* SubmitJob(grpc::CallbackServerContext* ctx, const mambaquant::v1::SubmitJobRequest* req,
                                      mambaquant::v1::Job* resp) override;
  grpc::ServerUnaryReactor* GetJob(grpc::CallbackServerContext* ctx, const mambaquant::v1::GetJobRequest* req,
                                   mambaquant::v1::Job* resp) override;
  grpc::ServerUnaryReactor* ListJobs(grpc::CallbackServerContext* ctx, const mambaquant::v1::ListJobsRequest* req,
                                     mambaquant::v1::ListJobsResponse* resp) override;
  grpc::ServerUnaryReactor* CancelJob(grpc::CallbackServerContext* ctx, const mambaquant::v1::CancelJobRequest* req,
                                      mambaquant::v1::Job* resp) override;
  grpc::ServerWriteReactor<mambaquant::v1::JobEvent>* WatchJob(grpc::CallbackServerContext* ctx,
                                                               const mambaquant::v1::WatchJobRequest* req) override;

 private:
  ServiceDeps deps_;
};

}  // namespace mq::server
