// mambaquant.v1.RegistryService: uploads, lookups, deletion and downloads of models and datasets.
#pragma once

#include "mambaquant/v1/registry.grpc.pb.h"
#include "service_deps.h"

namespace mq::server {

class RegistryServiceImpl final : public mambaquant::v1::RegistryService::CallbackService {
 public:
  explicit RegistryServiceImpl(ServiceDeps deps) : deps_(deps) {}

  grpc::ServerUnaryReactor* CreateUpload(grpc::CallbackServerContext* ctx, const mambaquant::v1::CreateUploadRequest* req,
                                         mambaquant::v1::Upload* resp) override;
  grpc::ServerUnaryReactor* GetUpload(grpc::CallbackServerContext* ctx, const mambaquant::v1::GetUploadRequest* req,
                                      mambaquant::v1::Upload* resp) override;
  grpc::ServerReadReactor<mambaquant::v1::UploadChunk>* UploadChunks(grpc::CallbackServerContext* ctx,
                                                                     mambaquant::v1::UploadChunksResponse* resp) override;
  grpc::ServerUnaryReactor* CommitUpload(grpc::CallbackServerContext* ctx, const mambaquant::v1::CommitUploadRequest* req,
                                         mambaquant::v1::Artifact* resp) override;
  grpc::ServerUnaryReactor* AbortUpload(grpc::CallbackServerContext* ctx, const mambaquant::v1::AbortUploadRequest* req,
                                        mambaquant::v1::AbortUploadResponse* resp) override;
  grpc::ServerUnaryReactor* GetArtifact(grpc::CallbackServerContext* ctx, const mambaquant::v1::GetArtifactRequest* req,
                                        mambaquant::v1::Artifact* resp) override;
  grpc::ServerUnaryReactor* ListArtifacts(grpc::CallbackServerContext* ctx, const mambaquant::v1::ListArtifactsRequest* req,
                                          mambaquant::v1::ListArtifactsResponse* resp) override;
  grpc::ServerUnaryReactor* DeleteArtifact(grpc::CallbackServerContext* ctx, const mambaquant::v1::DeleteArtifactRequest* req,
                                           mambaquant::v1::DeleteArtifactResponse* resp) override;
  grpc::ServerWriteReactor<mambaquant::v1::FileChunk>* ReadFile(grpc::CallbackServerContext* ctx,
                                                                const mambaquant::v1::ReadFileRequest* req) override;

 private:
  ServiceDeps deps_;
};

}  // namespace mq::server
