// Client side of the chunked transfer protocol (RegistryService.UploadChunks/ReadFile and their
// WorkerService twins), shared by mqctl and mq-worker. Memory stays bounded: one chunk in flight
// per stream, gRPC flow control does the rest.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mambaquant/v1/registry.pb.h"

namespace mq {

inline constexpr size_t kTransferChunkBytes = 1 << 20;

// Size and SHA-256 of a local file, described under the artifact-relative `path`.
absl::StatusOr<mambaquant::v1::FileEntry> DescribeLocalFile(const std::string& local_path,
                                                           const std::string& path);

// Called after every chunk with the bytes done so far and the total.
using TransferProgressFn = std::function<void(uint64_t done, uint64_t total)>;
// Adds credentials and deadline to a fresh context.
using PrepareContextFn = std::function<void(grpc::ClientContext*)>;

using OpenUploadStreamFn = std::function<std::unique_ptr<grpc::ClientWriterInterface<mambaquant::v1::UploadChunk>>(
    grpc::ClientContext*, mambaquant::v1::UploadChunksResponse*)>;
// Refreshes the upload state after an interrupted stream; may be empty (no resume).
using GetUploadFn = std::function<absl::StatusOr<mambaquant::v1::Upload>()>;

// Sends the bytes the server does not hold yet for every file of `upload` (`local_paths` maps the
// declared path to the local file). Interrupted streams are resumed from the server's committed
// offsets up to a few times when `get_upload` is given.
absl::Status SendUploadFiles(const mambaquant::v1::Upload& upload,
                             const std::map<std::string, std::string>& local_paths,
                             const PrepareContextFn& prepare, const OpenUploadStreamFn& open_stream,
                             const GetUploadFn& get_upload, const TransferProgressFn& progress);

// Bytes of `upload`'s files the server does not hold yet (0: every file is complete, deduplicated
// blobs included, which the server checks intact when the upload is created).
uint64_t PendingBytes(const mambaquant::v1::Upload& upload);

using OpenReadStreamFn = std::function<std::unique_ptr<grpc::ClientReaderInterface<mambaquant::v1::FileChunk>>(
    grpc::ClientContext*, uint64_t offset)>;

// Downloads into `dest_path`: bytes go to "<dest_path>.part" (resumed if present), the digest and
// size are checked, then the file is fsync'ed and renamed into place. Transient failures are
// retried from the bytes already on disk.
absl::Status DownloadToFile(const std::string& dest_path, uint64_t expected_size,
                            const std::string& expected_sha256, const PrepareContextFn& prepare,
                            const OpenReadStreamFn& open_stream, const TransferProgressFn& progress);

}  // namespace mq
