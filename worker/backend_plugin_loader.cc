#include "backend_plugin_loader.h"

#include <dlfcn.h>
#include <unistd.h>

#include <filesystem>
#include <system_error>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"

namespace mq::worker {
namespace {

std::string DlError() {
  const char* e = ::dlerror();
  return e != nullptr ? e : "unknown dlerror";
}

absl::Status ToAbsl(const mq::Status& s) {
  if (s.ok()) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(s.code()), s.message());
}

}  // namespace

absl::StatusOr<const mq::serve::BackendPlugin*> LoadBackendPlugin(const std::string& path) {
  std::error_code ec;
  if (path.empty()) return absl::InvalidArgumentError("no backend plugin path given");
  if (!std::filesystem::exists(path, ec))
    return absl::NotFoundError(absl::StrCat("backend plugin ", path, " not found"));
  ::dlerror();  // clear any earlier error
  void* handle = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle == nullptr)
    return absl::FailedPreconditionError(absl::StrCat("cannot load backend plugin ", path, ": ", DlError()));
  ::dlerror();
  using EntryFn = const mq::serve::BackendPlugin* (*)();
  auto entry = reinterpret_cast<EntryFn>(::dlsym(handle, "mq_backend_plugin"));
  if (entry == nullptr) {
    const std::string why = DlError();
    ::dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " is not a backend plugin (no mq_backend_plugin symbol): ", why));
  }
  const mq::serve::BackendPlugin* plugin = entry();
  if (plugin == nullptr) {
    ::dlclose(handle);
    return absl::FailedPreconditionError(absl::StrCat(path, ": mq_backend_plugin() returned no table"));
  }
  if (plugin->abi_version != mq::serve::kBackendPluginAbiVersion) {
    const int got = plugin->abi_version;
    ::dlclose(handle);
    return absl::FailedPreconditionError(
        absl::StrCat(path, " has backend plugin ABI version ", got, " but this worker expects ",
                     mq::serve::kBackendPluginAbiVersion, ": use the plugin built with this mq-worker"));
  }
  if (plugin->probe == nullptr || plugin->open_model == nullptr || plugin->open_quant == nullptr ||
      plugin->device_memory_used == nullptr) {
    ::dlclose(handle);
    return absl::FailedPreconditionError(absl::StrCat(path, ": the backend plugin table has empty entries"));
  }
  // The handle is never closed: the table and everything it hands out live in the plugin.
  return plugin;
}

std::vector<std::string> DefaultBackendPluginPaths() {
  std::error_code ec;
  std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return {kCudaBackendPluginName};  // dlopen's own search (LD_LIBRARY_PATH, ld.so.cache)
  const std::filesystem::path dir = exe.parent_path();
  return {(dir / kCudaBackendPluginName).string(),
          (dir / ".." / "lib" / kCudaBackendPluginName).lexically_normal().string()};
}

std::string ResolveBackendPluginPath(const std::string& flag) {
  if (!flag.empty()) return flag;
  const std::vector<std::string> paths = DefaultBackendPluginPaths();
  std::error_code ec;
  for (const std::string& p : paths)
    if (std::filesystem::exists(p, ec)) return p;
  return paths.front();
}

absl::StatusOr<const mq::serve::BackendPlugin*> LoadAndProbeBackendPlugin(const std::string& path,
                                                                         mq::serve::DeviceDescription* device) {
  auto plugin = LoadBackendPlugin(path);
  if (!plugin.ok()) return plugin.status();
  mq::serve::DeviceDescription found;
  const mq::Status probed = (*plugin)->probe(&found);
  if (!probed.ok()) return ToAbsl(probed);
  if (device != nullptr) *device = found;
  return plugin;
}

}  // namespace mq::worker
