// mambaquant.v1.WorkerService: the internal API workers call (membership, job pulls, progress,
// blobs, results).
#pragma once

#include "mambaquant/v1/worker.grpc.pb.h"
#include "service_deps.h"
#include "worker_ownership.h"

namespace mq::server {

class WorkerServiceImpl final : public mambaquant::v1::WorkerService::CallbackService {
 public:
  explicit WorkerServiceImpl(ServiceDeps deps) : deps_(deps), owners_(deps.auth != nullptr && deps.auth->enabled(), deps.workers) {}

  grpc::ServerUnaryReactor* RegisterWorker(grpc::CallbackServerContext* ctx, const mambaquant::v1::RegisterWorkerRequest* req,
                                           mambaquant::v1::RegisterWorkerResponse* resp) override;
  grpc::ServerUnaryReactor* Heartbeat(grpc::CallbackServerContext* ctx, const mambaquant::v1::HeartbeatRequest* req,
                                      mambaquant::v1::HeartbeatResponse* resp) override;
  grpc::ServerUnaryReactor* AcquireJob(grpc::CallbackServerContext* ctx, const mambaquant::v1::AcquireJobRequest* req,
                                       mambaquant::v1::AcquireJobResponse* resp) override;
  grpc::ServerUnaryReactor* ReportProgress(grpc::CallbackServerContext* ctx, const mambaquant::v1::ReportProgressRequest* req,
                                           mambaquant::v1::ReportProgressResponse* resp) override;
  grpc::ServerWriteReactor<mambaquant::v1::FileChunk>* FetchBlob(grpc::CallbackServerContext* ctx,
                                                                 const mambaquant::v1::FetchBlobRequest* req) override;
  grpc::ServerUnaryReactor* StartResultUpload(grpc::CallbackServerContext* ctx,
                                              const mambaquant::v1::StartResultUploadRequest* req,
                                              mambaquant::v1::Upload* resp) override;
  grpc::ServerReadReactor<mambaquant::v1::UploadChunk>* UploadResultChunks(
      grpc::CallbackServerContext* ctx, mambaquant::v1::UploadChunksResponse* resp) override;
  grpc::ServerUnaryReactor* FinishJob(grpc::CallbackServerContext* ctx, const mambaquant::v1::FinishJobRequest* req,
                                      mambaquant::v1::FinishJobResponse* resp) override;
  grpc::ServerBidiReactor<mambaquant::v1::ServeUp, mambaquant::v1::ServeDown>* Serve(grpc::CallbackServerContext* ctx) override;
  grpc::ServerUnaryReactor* Deregister(grpc::CallbackServerContext* ctx, const mambaquant::v1::DeregisterRequest* req,
                                       mambaquant::v1::DeregisterResponse* resp) override;

 private:
  // The caller must be the identity `worker_id` is bound to (binding it when unbound).
  absl::Status ClaimWorker(const grpc::CallbackServerContext& ctx, const std::string& worker_id);
  // Ends the job in `outcome` with no result registered (and drops the result upload, if any).
  absl::Status FinishWithoutResult(const std::string& worker_id, const std::string& job_id,
                                   mambaquant::v1::JobState outcome, const std::string& error,
                                   const std::string& result_upload_id, absl::Time now, mambaquant::v1::Job* finished);

  ServiceDeps deps_;
  WorkerOwnership owners_;
};

}  // namespace mq::server
