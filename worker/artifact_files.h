// Brings an artifact's files to this worker: each blob through the digest-verified cache, then the
// artifact's directory as links to the cached blobs. Used by quantization jobs and by inference
// model loads alike. Paths come from the server and are checked again here: a worker must not
// write outside its directory whoever sends it a path.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include <google/protobuf/repeated_field.h>

#include "absl/status/statusor.h"
#include "blob_cache.h"
#include "mambaquant/v1/common.pb.h"
#include "server_connection.h"

namespace mq::worker {

// Fetches one blob into the cache (unless present) and returns its local path. `progress` gets the
// bytes of this file done so far.
absl::StatusOr<std::string> FetchBlobToCache(BlobCache* cache, const ServerConnection* server,
                                             const mambaquant::v1::FileEntry& file,
                                             const std::function<void(uint64_t done)>& progress);

// INVALID_ARGUMENT unless `path` is a relative path of safe components ([A-Za-z0-9._-], not "." or
// "..", at most 8 components and 255 bytes: FileEntry's contract).
absl::Status CheckArtifactPath(const std::string& path);

// Links `dir`/path → cached blob for every file (dir is created; existing links are replaced).
// `each_file` (optional) runs before each fetch; returning an error stops the fetch with it.
absl::Status MaterializeArtifact(BlobCache* cache, const ServerConnection* server,
                                 const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files,
                                 const std::string& dir,
                                 const std::function<absl::Status(const mambaquant::v1::FileEntry&)>& each_file,
                                 const std::function<void(const mambaquant::v1::FileEntry&, uint64_t done)>& progress);

}  // namespace mq::worker
