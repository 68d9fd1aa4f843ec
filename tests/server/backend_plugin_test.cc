// The CUDA backend plugin (libmq_cuda_backend.so) and the worker's loader, on any machine: a GPU
// is optional (without one, the probe must fail cleanly with a reason, never crash).
//
// The regression test of the civetweb conflict: linked into a process, the CUDA libraries' static
// TLS (cuBLASLt alone 94 KB) raises glibc's minimum thread stack above the 100 KB civetweb asks
// for, so the Prometheus endpoint could not start its threads (pthread_create EINVAL). Loaded with
// dlopen they must leave thread creation alone: a 100 KB thread and a prometheus::Exposer start
// here with the plugin (and so cuBLASLt) loaded, and a real mq-worker serves /metrics after
// loading it. The plugin must export mq_backend_plugin alone, and mq-worker must need no CUDA
// library.
#include <dlfcn.h>
#include <elf.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/registry.h>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "backend_plugin_loader.h"
#include "cluster.h"
#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "test_support.h"

namespace mq::worker {
namespace {

#ifdef MQ_CUDA_BACKEND_PLUGIN
constexpr const char* kPluginPath = MQ_CUDA_BACKEND_PLUGIN;
#else
constexpr const char* kPluginPath = nullptr;
#endif

#define MQ_REQUIRE_PLUGIN() \
  if (kPluginPath == nullptr) GTEST_SKIP() << "built without the CUDA backend (no mq_cuda_backend target)"

// mq::Status as text without linking the engine (this test loads the plugin's copy only).
std::string Str(const mq::Status& s) { return absl::StrCat("code ", static_cast<int>(s.code()), ": ", s.message()); }

// civetweb's worker stack size (Debian's libcivetweb: 100 KB).
constexpr size_t kCivetwebStack = 102400;

// Names of the symbols an ELF shared object defines in its dynamic symbol table.
std::vector<std::string> DefinedDynamicSymbols(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> f((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> out;
  if (f.size() < sizeof(Elf64_Ehdr)) return out;
  Elf64_Ehdr eh;
  std::memcpy(&eh, f.data(), sizeof eh);
  if (std::memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_ident[EI_CLASS] != ELFCLASS64) return out;
  if (eh.e_shoff + static_cast<uint64_t>(eh.e_shnum) * sizeof(Elf64_Shdr) > f.size()) return out;
  std::vector<Elf64_Shdr> sh(eh.e_shnum);
  std::memcpy(sh.data(), f.data() + eh.e_shoff, sh.size() * sizeof(Elf64_Shdr));
  for (const Elf64_Shdr& s : sh) {
    if (s.sh_type != SHT_DYNSYM || s.sh_link >= sh.size()) continue;
    const Elf64_Shdr& strtab = sh[s.sh_link];
    for (uint64_t off = s.sh_offset + sizeof(Elf64_Sym); off + sizeof(Elf64_Sym) <= s.sh_offset + s.sh_size;
         off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, f.data() + off, sizeof sym);
      if (sym.st_shndx == SHN_UNDEF || ELF64_ST_BIND(sym.st_info) == STB_LOCAL) continue;
      out.emplace_back(f.data() + strtab.sh_offset + sym.st_name);
    }
  }
  return out;
}

std::string ReadProcFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// pthread_create's result for a thread with civetweb's stack size.
int StartThreadWithStack(size_t stack) {
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  int rc = pthread_attr_setstacksize(&attr, stack);
  if (rc == 0) {
    pthread_t t;
    rc = pthread_create(&t, &attr, [](void*) -> void* { return nullptr; }, nullptr);
    if (rc == 0) pthread_join(t, nullptr);
  }
  pthread_attr_destroy(&attr);
  return rc;
}

// ---- the loader, with or without the CUDA backend ----

TEST(BackendPluginLoaderTest, MissingFileIsNotFound) {
  auto p = LoadBackendPlugin("/nonexistent/libmq_cuda_backend.so");
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(absl::StrContains(p.status().message(), "/nonexistent/libmq_cuda_backend.so")) << p.status();
}

TEST(BackendPluginLoaderTest, UnloadableFileGivesDlerrorText) {
  mq::test::TempDir dir;
  const std::string path = dir.Sub("libnot-elf.so");
  std::ofstream(path) << "this is not a shared object\n";
  auto p = LoadBackendPlugin(path);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(p.status().message(), "cannot load backend plugin " + path + ": ")) << p.status();
  EXPECT_TRUE(absl::StrContains(p.status().message(), "ELF") || absl::StrContains(p.status().message(), "too short"))
      << "dlerror's text is missing: " << p.status();
}

TEST(BackendPluginLoaderTest, LibraryWithoutTheEntryPointIsRefused) {
  Dl_info info{};
  void* cos_fn = ::dlsym(RTLD_DEFAULT, "cos");
  ASSERT_NE(cos_fn, nullptr);
  ASSERT_NE(::dladdr(cos_fn, &info), 0);
  auto p = LoadBackendPlugin(info.dli_fname);  // libm
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(p.status().message(), "no mq_backend_plugin symbol")) << p.status();
}

TEST(BackendPluginLoaderTest, OtherAbiVersionIsRefused) {
  auto p = LoadBackendPlugin(MQ_FAKE_BACKEND_PLUGIN);
  ASSERT_FALSE(p.ok());
  EXPECT_EQ(p.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(absl::StrContains(p.status().message(),
                                absl::StrCat("ABI version ", mq::serve::kBackendPluginAbiVersion + 1000,
                                             " but this worker expects ", mq::serve::kBackendPluginAbiVersion)))
      << p.status();
}

TEST(BackendPluginLoaderTest, DefaultPathsAreNextToTheExecutableThenLib) {
  const std::string exe_dir = std::filesystem::read_symlink("/proc/self/exe").parent_path().string();
  const std::vector<std::string> paths = DefaultBackendPluginPaths();
  ASSERT_EQ(paths.size(), 2u);
  EXPECT_EQ(paths[0], exe_dir + "/libmq_cuda_backend.so");
  EXPECT_EQ(paths[1], std::filesystem::path(exe_dir).parent_path().string() + "/lib/libmq_cuda_backend.so");
  EXPECT_EQ(ResolveBackendPluginPath("/some/where/plugin.so"), "/some/where/plugin.so");
}

// ---- the CUDA plugin (built when the toolkit is present; runs without a GPU) ----

TEST(CudaBackendPluginTest, ExportsOnlyItsEntryPoint) {
  MQ_REQUIRE_PLUGIN();
  const std::vector<std::string> symbols = DefinedDynamicSymbols(kPluginPath);
  std::string listed;
  for (const auto& s : symbols) listed += s + "\n";
  EXPECT_EQ(symbols, std::vector<std::string>{"mq_backend_plugin"}) << "exported:\n" << listed;
}

TEST(CudaBackendPluginTest, LoadsWithThisAbiAndProbesCleanly) {
  MQ_REQUIRE_PLUGIN();
  auto p = LoadBackendPlugin(kPluginPath);
  ASSERT_TRUE(p.ok()) << p.status();
  const mq::serve::BackendPlugin* plugin = *p;
  EXPECT_EQ(plugin->abi_version, mq::serve::kBackendPluginAbiVersion);
  auto again = LoadBackendPlugin(kPluginPath);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, plugin) << "a second load must return the same table";

  mq::serve::DeviceDescription d;
  const mq::Status probed = plugin->probe(&d);
  if (probed.ok()) {
    std::printf("[plugin] probe: %s, %llu MiB total, %llu MiB free\n", d.name.c_str(),
                static_cast<unsigned long long>(d.total_bytes >> 20), static_cast<unsigned long long>(d.free_bytes >> 20));
    EXPECT_EQ(d.device, "cuda");
    EXPECT_FALSE(d.name.empty());
    EXPECT_GT(d.total_bytes, 0u);
    EXPECT_GT(plugin->device_memory_used(), 0u);
    return;
  }
  // No GPU (this is what CI sees): a clean UNAVAILABLE with the reason, and the other entries
  // refuse without crashing.
  std::printf("[plugin] probe without a GPU: %s\n", Str(probed).c_str());
  EXPECT_EQ(probed.code(), mq::StatusCode::kUnavailable);
  EXPECT_TRUE(absl::StrContains(probed.message(), "CUDA")) << Str(probed);
  EXPECT_EQ(plugin->device_memory_used(), 0u);
  mq::serve::SequenceBackendOptions o;
  o.num_slots = 2, o.max_batch = 2, o.max_prefill_tokens = 16, o.max_logit_rows = 16;
  auto model = plugin->open_model(mq::test::SourceDir() + "/models/mamba-tiny", o);
  EXPECT_FALSE(model.ok());
  std::printf("[plugin] open_model without a GPU: %s\n", Str(model.status()).c_str());
  mq::quant::QuantizeOptions q;
  q.model_dir = mq::test::SourceDir() + "/models/mamba-tiny";
  std::string why_not;
  auto accel = plugin->open_quant(q, &why_not);
  ASSERT_TRUE(accel.ok()) << Str(accel.status());
  EXPECT_EQ(*accel, nullptr) << "an accelerator without a GPU";
  EXPECT_FALSE(why_not.empty());
  std::printf("[plugin] open_quant without a GPU: null, because: %s\n", why_not.c_str());
}

TEST(CudaBackendPluginTest, ThreadsAndMetricsServerStartWithThePluginLoaded) {
  MQ_REQUIRE_PLUGIN();
  auto p = LoadBackendPlugin(kPluginPath);
  ASSERT_TRUE(p.ok()) << p.status();
  mq::serve::DeviceDescription d;
  (void)(*p)->probe(&d);  // initializes the CUDA runtime as the worker does (GPU or not)
  const std::string maps = ReadProcFile("/proc/self/maps");
  ASSERT_TRUE(absl::StrContains(maps, "libcublasLt")) << "cuBLASLt is not loaded: the test would prove nothing";
  ASSERT_TRUE(absl::StrContains(maps, "libmq_cuda_backend.so"));

  EXPECT_EQ(StartThreadWithStack(kCivetwebStack), 0) << "a thread with civetweb's 100 KB stack cannot start";

  auto registry = std::make_shared<prometheus::Registry>();
  auto& family = prometheus::BuildCounter().Name("mq_plugin_test_total").Help("test counter").Register(*registry);
  family.Add({}).Increment(3);
  const int port = mq::test::PickFreePort();
  std::unique_ptr<prometheus::Exposer> exposer;
  try {
    exposer = std::make_unique<prometheus::Exposer>(absl::StrCat("127.0.0.1:", port));
  } catch (const std::exception& e) {
    FAIL() << "prometheus::Exposer did not start with the plugin loaded: " << e.what();
  }
  exposer->RegisterCollectable(registry);
  const std::string response = mq::test::HttpGet(port, "/metrics", absl::Seconds(10));
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << response;
  EXPECT_TRUE(absl::StrContains(response, "mq_plugin_test_total 3")) << response;
}

// ---- the worker process ----

TEST(WorkerBackendTest, WorkerNeedsNoCudaLibrary) {
  if (!std::filesystem::exists("/usr/bin/ldd")) GTEST_SKIP() << "no ldd";
  std::string out;
  ASSERT_EQ(mq::test::RunCommand({"/usr/bin/ldd", MQ_WORKER_BIN}, &out, absl::Seconds(30)), 0) << out;
  for (const char* lib : {"libcudart", "libcublas", "libcusolver", "libcuda.so"})
    EXPECT_FALSE(absl::StrContains(out, lib)) << "mq-worker links " << lib << ":\n" << out;
}

// --backend auto: the plugin is loaded (and stays loaded when the probe finds no GPU) before the
// metrics endpoint starts; /metrics must answer, and the worker must say which device it uses.
TEST(WorkerBackendTest, AutoBackendServesMetricsWithThePluginLoaded) {
  mq::test::TempDir dir;
  const int metrics_port = mq::test::PickFreePort();
  mq::test::ChildProcess worker({MQ_WORKER_BIN, "--server", absl::StrCat("127.0.0.1:", mq::test::PickFreePort()),
                                 "--listen", absl::StrCat("127.0.0.1:", mq::test::PickFreePort()), "--backend", "auto",
                                 "--metrics-listen", absl::StrCat("127.0.0.1:", metrics_port), "--cache-dir",
                                 dir.Sub("cache"), "--insecure"},
                                dir.Sub("worker.log"));
  const std::string response = mq::test::HttpGet(metrics_port, "/metrics", absl::Seconds(20));
  // The metrics endpoint answers before the worker has finished starting: wait for its "started"
  // line (which names the backend) before reading the log or signalling it (seen on a loaded CI
  // machine: the line not yet written).
  std::string log;
  for (int i = 0; i < 400; ++i) {
    log = mq::test::ReadFileOrDie(dir.Sub("worker.log"));
    if (absl::StrContains(log, "mq-worker started")) break;
    absl::SleepFor(absl::Milliseconds(50));
  }
  const std::string maps = ReadProcFile(absl::StrCat("/proc/", worker.pid(), "/maps"));
  EXPECT_TRUE(absl::StartsWith(response, "HTTP/1.1 200")) << "worker metrics did not answer:\n" << response << "\n" << log;
  if (kPluginPath != nullptr) {
    EXPECT_TRUE(absl::StrContains(maps, "libmq_cuda_backend.so")) << "the worker did not load the plugin:\n" << log;
    if (absl::StrContains(log, "computing on the CPU")) {
      EXPECT_TRUE(absl::StrContains(log, "backend=cpu")) << log;
    } else {
      EXPECT_TRUE(absl::StrContains(log, "backend=cuda")) << log;
    }
  }
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(absl::Seconds(20)), 0) << mq::test::ReadFileOrDie(dir.Sub("worker.log"));
}

// Numeric flags are checked before the worker registers or listens: a nonsense value exits 2
// naming the flag (they were silently replaced: a negative --cache-max-bytes meant never evict, a
// negative --model-memory-budget 90 % of memory, --max-batch -1 the default).
TEST(WorkerBackendTest, NonsenseNumericFlagsExitNamingTheFlag) {
  mq::test::TempDir dir;
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--max-batch", "-1"}, "--max-batch must be"},
      {{"--model-memory-budget", "-5"}, "--model-memory-budget must be"},
      {{"--cache-max-bytes", "-1"}, "--cache-max-bytes must be"},
      {{"--poll-seconds", "0"}, "--poll-seconds must be 1..60"},
      {{"--poll-seconds", "61"}, "--poll-seconds must be 1..60"},
      {{"--max-batch", "65"}, "max batch must be in [1, slots=64]"},
  };
  for (const auto& [flags, message] : cases) {
    std::vector<std::string> argv = {MQ_WORKER_BIN, "--server", "127.0.0.1:1", "--listen",
                                     absl::StrCat("127.0.0.1:", mq::test::PickFreePort()), "--backend", "cpu",
                                     "--cache-dir", dir.Sub("cache"), "--insecure"};
    argv.insert(argv.end(), flags.begin(), flags.end());
    std::string out;
    EXPECT_EQ(mq::test::RunCommandWithStderr(argv, &out), 2) << flags[0] << " " << flags[1] << ": " << out;
    EXPECT_TRUE(absl::StrContains(out, message)) << out;
    EXPECT_FALSE(absl::StrContains(out, "registration failed")) << out;
  }
}

TEST(WorkerBackendTest, CudaBackendWithoutThePluginExitsWithTheReason) {
  mq::test::TempDir dir;
  mq::test::ChildProcess worker({MQ_WORKER_BIN, "--server", "127.0.0.1:1", "--listen",
                                 absl::StrCat("127.0.0.1:", mq::test::PickFreePort()), "--backend", "cuda",
                                 "--backend-plugin", "/nonexistent/libmq_cuda_backend.so", "--cache-dir",
                                 dir.Sub("cache"), "--insecure"},
                                dir.Sub("worker.log"));
  EXPECT_EQ(worker.Wait(absl::Seconds(20)), 2);
  const std::string log = mq::test::ReadFileOrDie(dir.Sub("worker.log"));
  EXPECT_TRUE(absl::StrContains(log, "--backend cuda: NOT_FOUND: backend plugin /nonexistent/libmq_cuda_backend.so not found"))
      << log;
}

TEST(WorkerBackendTest, CudaBackendWithoutAGpuExitsWithTheReason) {
  MQ_REQUIRE_PLUGIN();
  {
    auto p = LoadBackendPlugin(kPluginPath);
    ASSERT_TRUE(p.ok()) << p.status();
    mq::serve::DeviceDescription d;
    if ((*p)->probe(&d).ok()) GTEST_SKIP() << "a GPU is present (" << d.name << "): the worker would start";
  }
  mq::test::TempDir dir;
  mq::test::ChildProcess worker({MQ_WORKER_BIN, "--server", "127.0.0.1:1", "--listen",
                                 absl::StrCat("127.0.0.1:", mq::test::PickFreePort()), "--backend", "cuda",
                                 "--cache-dir", dir.Sub("cache"), "--insecure"},
                                dir.Sub("worker.log"));
  EXPECT_EQ(worker.Wait(absl::Seconds(20)), 2);
  const std::string log = mq::test::ReadFileOrDie(dir.Sub("worker.log"));
  EXPECT_TRUE(absl::StrContains(log, "--backend cuda: UNAVAILABLE: ")) << log;
}

// Quantization jobs take their device from the plugin: a worker that loaded one (here the fake
// GPU: the CPU reference renamed "cuda (fake GPU)") registers as cuda with the probe's device, runs
// a job the device supports there (the report's `device` says so), and runs a job the device
// declines (static activation scales) on the CPU, with the reason in its log and report.
TEST(WorkerBackendTest, QuantizationJobsTakeTheirDeviceFromThePlugin) {
  mq::test::Cluster c;
  c.StartServer();
  c.UploadBundled();
  mq::test::TempDir dir;
  mq::test::ChildProcess worker({MQ_WORKER_BIN, "--server", c.address(), "--listen",
                                 absl::StrCat("127.0.0.1:", mq::test::PickFreePort()), "--backend", "cuda",
                                 "--backend-plugin", MQ_FAKE_GPU_BACKEND_PLUGIN, "--cache-dir", dir.Sub("cache"),
                                 "--insecure", "--poll-seconds", "2", "--name", "fake-gpu"},
                                dir.Sub("worker.log"));
  auto run_job = [&](std::vector<std::string> extra) -> nlohmann::json {
    std::vector<std::string> args = {"jobs", "submit", "--model", "mamba-tiny", "--preset", "mambaquant", "--bits",
                                     "w8a8", "--calib", "calib", "--samples", "8", "--seq-len", "64", "--wait", "--json"};
    args.insert(args.end(), extra.begin(), extra.end());
    std::string out;
    EXPECT_EQ(c.Mqctl(args, &out), 0) << out;
    auto job = nlohmann::json::parse(out, nullptr, false);
    EXPECT_EQ(job["state"], "JOB_STATE_SUCCEEDED") << out;
    EXPECT_EQ(c.Mqctl({"models", "get", job["result_model"].get<std::string>(), "--json"}, &out), 0) << out;
    return nlohmann::json::parse(nlohmann::json::parse(out)["quantization"]["report_json"].get<std::string>());
  };
  const nlohmann::json on_gpu = run_job({});
  EXPECT_EQ(on_gpu["device"], "cuda (fake GPU)") << on_gpu.dump();
  EXPECT_FALSE(on_gpu.contains("device_note")) << on_gpu.dump();
  const nlohmann::json on_cpu = run_job({"--act", "per_tensor"});
  EXPECT_EQ(on_cpu["device"], "cpu") << on_cpu.dump();
  EXPECT_EQ(on_cpu.value("device_note", ""), "GPU not used: fake GPU: static activation scales are not supported")
      << on_cpu.dump();
  const std::string log = mq::test::ReadFileOrDie(dir.Sub("worker.log"));
  EXPECT_TRUE(absl::StrContains(log, "backend=cuda device=\"Fake GPU\"")) << log;
  EXPECT_TRUE(absl::StrContains(log, "job runs on the CPU, not the GPU")) << log;
  worker.Signal(SIGTERM);
  EXPECT_EQ(worker.Wait(absl::Seconds(20)), 0) << log;
}

}  // namespace
}  // namespace mq::worker
