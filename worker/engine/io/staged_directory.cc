#include "io/staged_directory.h"

#include <unistd.h>

#include <fstream>
#include <utility>

namespace mq {

namespace fs = std::filesystem;

StatusOr<StagedDirectory> StagedDirectory::Create(const fs::path& out) {
  std::error_code ec;
  fs::path staging = out.parent_path() / (out.filename().string() + ".partial-" + std::to_string(::getpid()));
  fs::remove_all(staging, ec);
  fs::create_directories(staging, ec);
  if (ec) return InternalError(staging.string() + ": cannot create: " + ec.message());
  return StagedDirectory(out, std::move(staging));
}

StagedDirectory::StagedDirectory(StagedDirectory&& o) noexcept
    : out_(std::move(o.out_)), staging_(std::move(o.staging_)), committed_(o.committed_) {
  o.committed_ = true;  // the moved-from object owns nothing to remove
}

StagedDirectory::~StagedDirectory() {
  if (committed_) return;
  std::error_code ec;
  fs::remove_all(staging_, ec);
}

Status StagedDirectory::WriteText(const std::string& name, const std::string& text) const {
  const fs::path p = File(name);
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << text;
  out.flush();
  if (!out) return InternalError(p.string() + ": write failed");
  return OkStatus();
}

Status StagedDirectory::CopyIfExists(const fs::path& from, const std::string& name) const {
  std::error_code ec;
  if (!fs::exists(from, ec)) return OkStatus();
  const fs::path to = File(name);
  fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
  if (ec) return InternalError(to.string() + ": copy failed: " + ec.message());
  return OkStatus();
}

Status StagedDirectory::Commit() {
  std::error_code ec;
  fs::remove(out_, ec);  // an empty directory, if any (a non-empty one stays and the rename fails)
  fs::rename(staging_, out_, ec);
  if (ec) return InternalError(out_.string() + ": rename failed: " + ec.message());
  committed_ = true;
  return OkStatus();
}

}  // namespace mq
