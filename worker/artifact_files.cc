#include "artifact_files.h"

#include <filesystem>
#include <memory>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "file_util.h"

namespace mq::worker {

using mambaquant::v1::FetchBlobRequest;
using mambaquant::v1::FileChunk;
using mambaquant::v1::FileEntry;

absl::StatusOr<std::string> FetchBlobToCache(BlobCache* cache, const ServerConnection* server, const FileEntry& file,
                                             const std::function<void(uint64_t)>& progress) {
  auto open = [server, &file](grpc::ClientContext* ctx, uint64_t offset) {
    FetchBlobRequest req;
    req.set_sha256(file.sha256());
    req.set_offset(offset);
    return std::unique_ptr<grpc::ClientReaderInterface<FileChunk>>(server->stub->FetchBlob(ctx, req));
  };
  auto prepare = [server](grpc::ClientContext* ctx) { server->Prepare(ctx); };
  return cache->Get(file, prepare, open, [&](uint64_t done, uint64_t) {
    if (progress) progress(done);
  });
}

absl::Status CheckArtifactPath(const std::string& path) {
  if (path.empty() || path.size() > 255) return absl::InvalidArgumentError(absl::StrCat("bad artifact path length: '", path, "'"));
  std::vector<std::string> parts = absl::StrSplit(path, '/');
  if (parts.size() > 8) return absl::InvalidArgumentError(absl::StrCat("artifact path has over 8 components: '", path, "'"));
  for (const auto& p : parts) {
    if (p.empty() || p == "." || p == ".." || p.size() > 128)
      return absl::InvalidArgumentError(absl::StrCat("unsafe artifact path '", path, "'"));
    for (char c : p) {
      const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
      if (!ok) return absl::InvalidArgumentError(absl::StrCat("unsafe character in artifact path '", path, "'"));
    }
  }
  return absl::OkStatus();
}

absl::Status MaterializeArtifact(BlobCache* cache, const ServerConnection* server,
                                 const google::protobuf::RepeatedPtrField<FileEntry>& files, const std::string& dir,
                                 const std::function<absl::Status(const FileEntry&)>& each_file,
                                 const std::function<void(const FileEntry&, uint64_t)>& progress) {
  for (const auto& f : files) {
    absl::Status s = CheckArtifactPath(f.path());
    if (!s.ok()) return s;
  }
  for (const auto& f : files) {
    if (each_file) {
      absl::Status s = each_file(f);
      if (!s.ok()) return s;
    }
    auto cached = FetchBlobToCache(cache, server, f, [&](uint64_t done) {
      if (progress) progress(f, done);
    });
    if (!cached.ok()) return cached.status();
    const std::string link = JoinPath(dir, f.path());
    absl::Status s = MakeDirs(Dirname(link));
    if (!s.ok()) return s;
    std::error_code ec;
    std::filesystem::remove(link, ec);
    std::filesystem::create_symlink(*cached, link, ec);
    if (ec) return absl::InternalError(absl::StrCat("link ", link, ": ", ec.message()));
  }
  return absl::OkStatus();
}

}  // namespace mq::worker
