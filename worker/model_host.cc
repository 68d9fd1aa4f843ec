#include "model_host.h"

#include <algorithm>

#include <malloc.h>

#include <filesystem>
#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "artifact_files.h"
#include "file_util.h"
#include "inference_request.h"
#include "log.h"
#include "model/mamba_config.h"
#include "serve/cpu_sequence_backend.h"
#include "tokenizer/bpe_tokenizer.h"
#include "vim/image_classifier.h"
#include "vim/vim_config.h"

namespace mq::worker {
namespace {

// "name:version" as the server resolves it: the name's charset, a colon, a version number. The
// worker checks it again before it becomes a directory name (it trusts no path from the server).
absl::Status CheckModelRef(const std::string& model) {
  const size_t colon = model.find(':');
  bool ok = colon != std::string::npos && colon > 0 && colon + 1 < model.size() && colon <= 128 &&
            model.size() - colon - 1 <= 10 && model.find("..") == std::string::npos && model[0] != '.';
  for (size_t i = 0; ok && i < model.size(); ++i) {
    const char c = model[i];
    if (i < colon) ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    else if (i > colon) ok = c >= '0' && c <= '9';
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("not a resolved model reference (name:version): '", model.substr(0, 200), "'"));
  return absl::OkStatus();
}

// A directory name for "name:version" (names are [A-Za-z0-9._-], the colon is the only other byte).
std::string DirName(const std::string& model) {
  std::string d = model;
  for (char& c : d)
    if (c == ':') c = '@';
  return d;
}

// Gives the pages of an unloaded model back to the system. Models load on threads of their own,
// so their memory sits in per-thread malloc arenas that glibc would otherwise keep for reuse by
// that thread only: without this an unload returns nothing to the host.
void ReturnFreedMemory() { malloc_trim(0); }

// Calls running or waiting on a model (a model with any is never evicted).
int Busy(const HostedModel& m) {
  if (m.classifier != nullptr) {
    const auto st = m.classifier->stats();
    return st.running + st.waiting;
  }
  const auto st = m.engine->stats();
  return st.running + st.waiting;
}

}  // namespace

ModelHost::ModelHost(ModelHostOptions options, BlobCache* cache, const ServerConnection* server)
    : options_(std::move(options)), cache_(cache), server_(server) {}

ModelHost::~ModelHost() { Shutdown(); }

void ModelHost::Shutdown() {
  std::map<std::string, Entry> loaded;
  {
    std::unique_lock<std::mutex> l(mu_);
    shut_down_ = true;
    loaders_done_.wait(l, [&] { return active_loaders_ == 0; });
    loaded.swap(loaded_);
  }
  const bool any = !loaded.empty();
  loaded.clear();  // engines stop here, outside the lock (their calls end with CANCELLED)
  if (any) ReturnFreedMemory();
}

std::string ModelHost::ContentKey(const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files) {
  std::vector<std::string> parts;
  parts.reserve(static_cast<size_t>(files.size()));
  for (const auto& f : files) parts.push_back(absl::StrCat(f.path(), "=", f.sha256()));
  std::sort(parts.begin(), parts.end());
  return absl::StrJoin(parts, ";");
}

void ModelHost::SetChangeListener(std::function<void()> listener) {
  std::lock_guard<std::mutex> l(mu_);
  listener_ = std::move(listener);
}

void ModelHost::Changed() {
  std::function<void()> listener;
  {
    std::lock_guard<std::mutex> l(mu_);
    listener = listener_;
  }
  if (listener) listener();
}

void ModelHost::Acquire(const std::string& model, const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files,
                        Ready ready) {
  if (absl::Status valid = CheckModelRef(model); !valid.ok()) {
    ready(valid);
    return;
  }
  HostedModel hosted, stale;
  bool shut_down = false;
  bool found = false;
  const std::string content = ContentKey(files);
  {
    std::lock_guard<std::mutex> l(mu_);
    shut_down = shut_down_;
    auto it = shut_down ? loaded_.end() : loaded_.find(model);
    if (it != loaded_.end() && it->second.content != content) {
      // The name:version was deleted and registered again with other files: the loaded weights
      // are not this model's any more. Drop them (calls running on them finish) and load anew.
      stale = std::move(it->second.model);
      loaded_.erase(it);
      it = loaded_.end();
    }
    if (shut_down) {
      // answered below, outside the lock
    } else if (it != loaded_.end()) {
      it->second.last_used = ++use_counter_;
      hosted = it->second.model;
      found = true;
    } else {
      auto [load, fresh] = loading_.try_emplace(model);
      load->second.waiters.push_back(std::move(ready));
      if (!fresh) return;
      ++active_loaders_;
    }
  }
  if (stale.engine != nullptr || stale.classifier != nullptr) {
    Log(LogLevel::kInfo, "model replaced: its files changed in the registry").Kv("model", model);
    stale = HostedModel{};  // the last reference but those of running calls
    ReturnFreedMemory();
  }
  if (shut_down) {
    ready(absl::UnavailableError("the worker is shutting down"));
    return;
  }
  if (found) {
    ready(std::move(hosted));
    return;
  }
  Changed();  // the server learns the model is loading
  std::thread([this, model, files, content] {
    auto result = LoadModel(model, files);
    std::vector<Ready> waiters;
    {
      std::lock_guard<std::mutex> l(mu_);
      waiters = std::move(loading_[model].waiters);
      loading_.erase(model);
      if (result.ok()) {
        Entry& e = loaded_[model];
        e.model = *result;
        e.last_used = ++use_counter_;
        e.content = content;
      }
    }
    if (!result.ok()) Log(LogLevel::kWarning, "model load failed").Kv("model", model).Kv("error", result.status());
    else Log(LogLevel::kInfo, "model loaded").Kv("model", model).Kv("bytes", result->bytes)
        .Kv("kind", result->classifier != nullptr ? "image classifier" : "text");
    Changed();
    for (auto& w : waiters) w(result);
    std::lock_guard<std::mutex> l(mu_);
    --active_loaders_;
    loaders_done_.notify_all();
  }).detach();
}

absl::StatusOr<HostedModel> ModelHost::LoadModel(const std::string& model,
                                                  const google::protobuf::RepeatedPtrField<mambaquant::v1::FileEntry>& files) {
  const std::string dir = JoinPath(options_.models_dir, DirName(model));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  for (const auto& f : files) cache_->Pin(f.sha256());  // never evicted while served
  absl::Status s = MaterializeArtifact(cache_, server_, files, dir, nullptr, nullptr);
  if (!s.ok()) return s;
  uint64_t file_bytes = 0;
  for (const auto& f : files) file_bytes += f.size();
  if (IsVimConfigFile(JoinPath(dir, "config.json"))) return LoadClassifier(dir, file_bytes);

  // Room before anything is allocated. The estimate: the files (×2 on the CPU, where F16/BF16
  // checkpoints become float32), every state slot, and the logits buffers; the size the backend
  // reports replaces it once loaded.
  auto config = MambaConfig::FromFile(JoinPath(dir, "config.json"));
  if (!config.ok()) return ToAbslStatus(config.status());
  const serve::SequenceBackendOptions& bo = options_.serving.backend;
  const uint64_t slot_bytes = static_cast<uint64_t>(state::DtypeBytes(bo.state_dtype)) *
                              static_cast<uint64_t>(config->num_hidden_layers) *
                              static_cast<uint64_t>(config->intermediate_size) *
                              static_cast<uint64_t>(config->conv_kernel - 1 + config->state_size);
  const uint64_t logits_bytes = 4ull * static_cast<uint64_t>(std::max(bo.max_batch, bo.max_logit_rows)) *
                                static_cast<uint64_t>(config->vocab_size);
  const uint64_t estimate = (options_.plugin != nullptr ? file_bytes : 2 * file_bytes) +
                            slot_bytes * static_cast<uint64_t>(bo.num_slots + 1) + 2 * logits_bytes;
  s = MakeRoom(estimate);
  if (!s.ok()) return s;

  auto tokenizer = Tokenizer::LoadFromFile(JoinPath(dir, "tokenizer.json"));
  if (!tokenizer.ok()) return ToAbslStatus(tokenizer.status());
  std::unique_ptr<serve::SequenceBackend> backend;
  if (options_.plugin != nullptr) {
    auto b = options_.plugin->open_model(dir, options_.serving.backend);
    if (!b.ok()) return ToAbslStatus(b.status());
    backend = std::move(*b);
  } else {
    auto b = serve::CpuSequenceBackend::Open(dir, options_.serving.backend);
    if (!b.ok()) return ToAbslStatus(b.status());
    backend = std::move(*b);
  }
  auto engine = serve::ServingEngine::Create(std::move(backend), std::make_shared<const Tokenizer>(std::move(*tokenizer)),
                                             options_.serving);
  if (!engine.ok()) return ToAbslStatus(engine.status());
  if (options_.metrics != nullptr) {
    WorkerMetrics* metrics = options_.metrics;
    (*engine)->SetStepObserver([metrics, model](int64_t batch, double seconds) { metrics->ObserveDecodeStep(model, batch, seconds); });
  }
  HostedModel hosted;
  hosted.bytes = (*engine)->backend().memory_bytes();
  hosted.engine = std::shared_ptr<serve::ServingEngine>(std::move(*engine));
  return hosted;
}

absl::StatusOr<HostedModel> ModelHost::LoadClassifier(const std::string& dir, uint64_t file_bytes) {
  auto config = VimConfig::FromFile(JoinPath(dir, "config.json"));
  if (!config.ok()) return ToAbslStatus(config.status());
  // The plugin's GPU classifier when the worker computes on the GPU (a plugin without one cannot
  // serve Vim models there); else the CPU one.
  const bool gpu = options_.plugin != nullptr;
  if (gpu && options_.plugin->open_classifier == nullptr)
    return absl::UnimplementedError("this worker's backend plugin cannot serve image classifiers (Vision Mamba)");
  // Room before anything is allocated. On the CPU the weights become float32 (a quantized
  // export's int8 weights four times their size at most); on the GPU they keep the file's size or
  // less. One batch's activations are small beside them; the size the device reports replaces
  // the estimate once loaded.
  const uint64_t estimate = gpu ? file_bytes : 4 * file_bytes;
  absl::Status s = MakeRoom(estimate);
  if (!s.ok()) return s;
  auto classifier = gpu ? options_.plugin->open_classifier(dir) : OpenCpuImageClassifier(dir);
  if (!classifier.ok()) return ToAbslStatus(classifier.status());
  const uint64_t bytes = (*classifier)->device_bytes() > 0 ? (*classifier)->device_bytes() : estimate;
  HostedModel hosted;
  hosted.bytes = bytes;
  hosted.classifier = std::make_shared<ClassifierRunner>(std::move(*classifier), ReadClassLabels(JoinPath(dir, "config.json"), config->num_classes),
                                                         bytes, options_.serving.max_waiting);
  return hosted;
}

absl::Status ModelHost::MakeRoom(uint64_t need) {
  if (options_.memory_budget_bytes == 0) return absl::OkStatus();
  if (need > options_.memory_budget_bytes)
    return absl::ResourceExhaustedError(absl::StrCat("the model needs about ", need, " bytes (weights, ",
                                                     options_.serving.backend.num_slots, " state slots and buffers), over "
                                                     "this worker's model memory budget of ", options_.memory_budget_bytes,
                                                     " bytes: lower --max-sequences or raise --model-memory-budget"));
  std::vector<HostedModel> evicted;
  {
    std::lock_guard<std::mutex> l(mu_);
    for (;;) {
      uint64_t used = 0;
      for (const auto& [name, e] : loaded_) used += e.model.bytes;
      if (used + need <= options_.memory_budget_bytes) break;
      auto victim = loaded_.end();
      for (auto it = loaded_.begin(); it != loaded_.end(); ++it) {
        if (Busy(it->second.model) > 0) continue;
        if (victim == loaded_.end() || it->second.last_used < victim->second.last_used) victim = it;
      }
      if (victim == loaded_.end())
        return absl::ResourceExhaustedError(absl::StrCat("the model memory budget (", options_.memory_budget_bytes,
                                                         " bytes) is taken by models serving calls; retry later"));
      Log(LogLevel::kInfo, "unloading least recently used model").Kv("model", victim->first);
      evicted.push_back(std::move(victim->second.model));
      loaded_.erase(victim);
    }
  }
  if (!evicted.empty()) {
    evicted.clear();
    ReturnFreedMemory();
  }
  return absl::OkStatus();
}

absl::Status ModelHost::Unload(const std::string& model) {
  HostedModel hosted;
  {
    std::lock_guard<std::mutex> l(mu_);
    auto it = loaded_.find(model);
    if (it == loaded_.end()) return absl::NotFoundError(absl::StrCat("model ", model, " is not loaded on this worker"));
    hosted = std::move(it->second.model);
    loaded_.erase(it);
  }
  hosted = HostedModel{};  // the last reference: the engine (or classifier) stops and frees its memory now
  ReturnFreedMemory();
  Changed();
  return absl::OkStatus();
}

mambaquant::v1::WorkerLoad ModelHost::Snapshot() const {
  mambaquant::v1::WorkerLoad load;
  std::lock_guard<std::mutex> l(mu_);
  uint64_t used = 0;
  for (const auto& [name, e] : loaded_) {
    auto* m = load.add_models();
    m->set_model(name);
    m->set_bytes(e.model.bytes);
    if (e.model.classifier != nullptr) {
      const auto st = e.model.classifier->stats();
      m->set_running(st.running);
      m->set_waiting(st.waiting);
    } else {
      const auto st = e.model.engine->stats();
      m->set_running(st.running);
      m->set_waiting(st.waiting);
      m->set_free_slots(st.free_slots);
    }
    used += e.model.bytes;
  }
  for (const auto& [name, l] : loading_) load.add_loading(name);
  load.set_memory_used_bytes(used);
  return load;
}

}  // namespace mq::worker
