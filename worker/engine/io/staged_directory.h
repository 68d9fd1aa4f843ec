// Writes a directory all at once: files go into `<out>.partial-<pid>` beside it, and Commit()
// renames that onto `out` (an empty `out` is replaced), so a reader never sees a half-written model
// directory. An uncommitted staging directory is removed when this is destroyed.
#pragma once

#include <filesystem>
#include <string>

#include "util/status.h"

namespace mq {

class StagedDirectory {
 public:
  static StatusOr<StagedDirectory> Create(const std::filesystem::path& out);
  StagedDirectory(StagedDirectory&& o) noexcept;
  StagedDirectory& operator=(StagedDirectory&&) = delete;
  StagedDirectory(const StagedDirectory&) = delete;
  ~StagedDirectory();

  const std::filesystem::path& path() const { return staging_; }
  // The file `name` in the staging directory.
  std::filesystem::path File(const std::string& name) const { return staging_ / name; }
  Status WriteText(const std::string& name, const std::string& text) const;
  // Copies `from` to File(name); a missing `from` is not an error (optional companion files).
  Status CopyIfExists(const std::filesystem::path& from, const std::string& name) const;
  Status Commit();

 private:
  StagedDirectory(std::filesystem::path out, std::filesystem::path staging)
      : out_(std::move(out)), staging_(std::move(staging)) {}
  std::filesystem::path out_, staging_;
  bool committed_ = false;
};

}  // namespace mq
