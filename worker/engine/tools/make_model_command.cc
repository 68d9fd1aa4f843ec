// mq-engine make-model: a Hugging Face-format Mamba-1 model directory with random weights of a
// named real shape (config.json, model.safetensors, the tokenizer files of another model), so a
// quantization job or a benchmark can run on the 2.8B shape without downloading a checkpoint.
//
// Every element is a function of (seed, tensor name, element index) alone (splitmix64), so the
// file is byte-identical for any thread count; tensors are generated in parallel chunks straight
// into their stored dtype (no float32 copy of the model). Initialization follows Mamba's:
// linears U(±1/√in) (out_proj also ÷√layers), embeddings N(0, 0.02), norms 1, conv U(±1/√K),
// A_log = log(1..N), D = 1, dt_proj.bias = softplus⁻¹(dt) with dt log-uniform in [0.001, 0.1].

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <functional>

#include <nlohmann/json.hpp>

#include "cpu/parallel_for.h"
#include "io/safetensors_writer.h"
#include "io/staged_directory.h"
#include "model/model_shapes.h"
#include "tokenizer/bpe_tokenizer.h"
#include "tools/command_line.h"
#include "tools/commands.h"
#include "vim/vim_config.h"
#include "vim/vim_weights.h"

namespace mq::tools {
namespace {

namespace fs = std::filesystem;

constexpr double kPi = 3.14159265358979323846;

uint64_t SplitMix64(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

uint64_t Fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (unsigned char c : s) h = (h ^ c) * 0x100000001b3ull;
  return h;
}

// The random stream of one tensor: bits(i) = splitmix64(key + i), key from the seed and the name
// (so a tensor's values do not depend on which other tensors the model has).
struct Stream {
  uint64_t key;
  Stream(uint64_t seed, const std::string& name) : key(SplitMix64(SplitMix64(seed) ^ Fnv1a(name))) {}
  uint64_t Bits(int64_t i) const { return SplitMix64(key + static_cast<uint64_t>(i) * 0x9e3779b97f4a7c15ull); }
  // Uniform in [0, 1) with 24 bits (exact in float).
  double Uniform(int64_t i) const { return static_cast<double>(Bits(i) >> 40) * (1.0 / 16777216.0); }
  double Symmetric(int64_t i, double bound) const { return bound * (2.0 * Uniform(i) - 1.0); }
  // Standard normal by Box–Muller from the two halves of one draw.
  double Normal(int64_t i) const {
    const uint64_t b = Bits(i);
    const double u1 = (static_cast<double>(b >> 40) + 1.0) * (1.0 / 16777217.0);  // (0, 1)
    const double u2 = static_cast<double>(b & 0xffffffu) * (1.0 / 16777216.0);
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * kPi * u2);
  }
};

struct ModelWriter {
  SafetensorsWriter st;
  DType dtype = DType::kF16;
  uint64_t seed = 0;
  int64_t parameters = 0;
  int64_t bytes = 0;

  // Adds tensor `name` of `shape` whose element i is value(stream, i).
  template <typename Fn>
  void Add(const std::string& name, std::vector<int64_t> shape, Fn value) {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    const Stream stream(seed, name);
    const size_t esize = DTypeSize(dtype);
    std::vector<uint8_t> data(static_cast<size_t>(n) * esize);
    uint8_t* out = data.data();
    const DType dt = dtype;
    cpu::ParallelFor(n, 1 << 16, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        const float v = static_cast<float>(value(stream, i));
        if (dt == DType::kF16) {
          const uint16_t h = FloatToHalf(v);
          std::memcpy(out + i * 2, &h, 2);
        } else {
          std::memcpy(out + i * 4, &v, 4);
        }
      }
    });
    parameters += n;
    bytes += static_cast<int64_t>(data.size());
    st.Add(name, dtype, std::move(shape), std::move(data));
  }
};

void AddModelTensors(const MambaConfig& c, ModelWriter& w) {
  const int64_t d = c.hidden_size, E = c.intermediate_size, N = c.state_size, R = c.time_step_rank;
  const int64_t K = c.conv_kernel, V = c.vocab_size, layers = c.num_hidden_layers;
  auto uniform = [](double bound) { return [bound](const Stream& s, int64_t i) { return s.Symmetric(i, bound); }; };
  auto constant = [](double x) { return [x](const Stream&, int64_t) { return x; }; };

  w.Add("backbone.embeddings.weight", {V, d}, [](const Stream& s, int64_t i) { return 0.02 * s.Normal(i); });
  for (int64_t l = 0; l < layers; ++l) {
    const std::string p = "backbone.layers." + std::to_string(l);
    const std::string m = p + ".mixer";
    w.Add(p + ".norm.weight", {d}, constant(1.0));
    w.Add(m + ".in_proj.weight", {2 * E, d}, uniform(1.0 / std::sqrt(double(d))));
    w.Add(m + ".conv1d.weight", {E, 1, K}, uniform(1.0 / std::sqrt(double(K))));
    w.Add(m + ".conv1d.bias", {E}, uniform(0.02));
    w.Add(m + ".x_proj.weight", {R + 2 * N, E}, uniform(1.0 / std::sqrt(double(E))));
    w.Add(m + ".dt_proj.weight", {E, R}, uniform(1.0 / std::sqrt(double(R))));
    w.Add(m + ".dt_proj.bias", {E}, [](const Stream& s, int64_t i) {
      // dt log-uniform in [time_step_min, time_step_max], floored; the bias is softplus⁻¹(dt).
      const double dt = std::max(1e-4, std::exp(std::log(1e-3) + s.Uniform(i) * (std::log(1e-1) - std::log(1e-3))));
      return dt + std::log(-std::expm1(-dt));
    });
    w.Add(m + ".A_log", {E, N}, [N](const Stream&, int64_t i) { return std::log(double(i % N + 1)); });
    w.Add(m + ".D", {E}, constant(1.0));
    w.Add(m + ".out_proj.weight", {d, E}, uniform(1.0 / std::sqrt(double(E)) / std::sqrt(double(layers))));
  }
  w.Add("backbone.norm_f.weight", {d}, constant(1.0));
}

// Vision Mamba with the official key names (vim-forward.md section 2) and hustvl/Vim's
// initialization: cls token and positions N(0, 0.02), patch conv U(±1/√(C·P·P)), the mixer as in
// Mamba for both directions (A_b_log, D_b, conv1d_b, x_proj_b, dt_proj_b), head U(±1/√D), bias 0.
void AddVimTensors(const VimConfig& c, ModelWriter& w) {
  const int64_t D = c.embed_dim, E = c.d_inner, N = c.d_state, R = c.dt_rank, K = c.d_conv, P = c.patch_size;
  auto uniform = [](double bound) { return [bound](const Stream& s, int64_t i) { return s.Symmetric(i, bound); }; };
  auto constant = [](double x) { return [x](const Stream&, int64_t) { return x; }; };
  auto normal = [](const Stream& s, int64_t i) { return 0.02 * s.Normal(i); };
  w.Add(vim_keys::kClsToken, {1, 1, D}, normal);
  w.Add(vim_keys::kPosEmbed, {1, c.seq_len(), D}, normal);
  w.Add(vim_keys::kPatchWeight, {D, c.in_chans, P, P}, uniform(1.0 / std::sqrt(double(c.in_chans * P * P))));
  w.Add(vim_keys::kPatchBias, {D}, uniform(0.02));
  for (int64_t l = 0; l < c.depth; ++l) {
    const std::string p = vim_keys::Layer(l), m = p + ".mixer";
    w.Add(p + ".norm.weight", {D}, constant(1.0));
    w.Add(m + ".in_proj.weight", {2 * E, D}, uniform(1.0 / std::sqrt(double(D))));
    w.Add(m + ".out_proj.weight", {D, E}, uniform(1.0 / std::sqrt(double(E)) / std::sqrt(double(c.depth))));
    for (const std::string sfx : {"", "_b"}) {
      w.Add(m + ".conv1d" + sfx + ".weight", {E, 1, K}, uniform(1.0 / std::sqrt(double(K))));
      w.Add(m + ".conv1d" + sfx + ".bias", {E}, uniform(0.02));
      w.Add(m + ".x_proj" + sfx + ".weight", {R + 2 * N, E}, uniform(1.0 / std::sqrt(double(E))));
      w.Add(m + ".dt_proj" + sfx + ".weight", {E, R}, uniform(1.0 / std::sqrt(double(R))));
      w.Add(m + ".dt_proj" + sfx + ".bias", {E}, [](const Stream& s, int64_t i) {
        const double dt = std::max(1e-4, std::exp(std::log(1e-3) + s.Uniform(i) * (std::log(1e-1) - std::log(1e-3))));
        return dt + std::log(-std::expm1(-dt));
      });
      w.Add(m + (sfx.empty() ? ".A_log" : ".A_b_log"), {E, N}, [N](const Stream&, int64_t i) { return std::log(double(i % N + 1)); });
      w.Add(m + ".D" + sfx, {E}, constant(1.0));
    }
  }
  w.Add(vim_keys::kNormF, {D}, constant(1.0));
  w.Add(std::string(vim_keys::kHead) + ".weight", {c.num_classes, D}, uniform(1.0 / std::sqrt(double(D))));
  w.Add(std::string(vim_keys::kHead) + ".bias", {c.num_classes}, constant(0.0));
}

// config.json with the keys a transformers MambaConfig writes (as the fixtures have them).
nlohmann::ordered_json ConfigJson(const MambaConfig& c, DType dtype) {
  nlohmann::ordered_json j;
  j["architectures"] = {"MambaForCausalLM"};
  j["bos_token_id"] = c.bos_token_id;
  j["conv_kernel"] = c.conv_kernel;
  j["dtype"] = dtype == DType::kF16 ? "float16" : "float32";
  j["eos_token_id"] = c.eos_token_id;
  j["expand"] = c.expand;
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.hidden_size;
  j["initializer_range"] = 0.02;
  j["intermediate_size"] = c.intermediate_size;
  j["layer_norm_epsilon"] = c.layer_norm_epsilon;
  j["model_type"] = "mamba";
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["pad_token_id"] = c.pad_token_id;
  j["rescale_prenorm_residual"] = true;
  j["residual_in_fp32"] = c.residual_in_fp32;
  j["state_size"] = c.state_size;
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  j["time_step_floor"] = 0.0001;
  j["time_step_init_scheme"] = "random";
  j["time_step_max"] = 0.1;
  j["time_step_min"] = 0.001;
  j["time_step_rank"] = c.time_step_rank;
  j["time_step_scale"] = 1.0;
  j["transformers_version"] = "5.17.0";
  j["use_associative_scan"] = true;
  j["use_bias"] = c.use_bias;
  j["use_cache"] = true;
  j["use_conv_bias"] = c.use_conv_bias;
  j["use_mambapy"] = false;
  j["vocab_size"] = c.vocab_size;
  return j;
}

struct MakeModelOptions {
  std::string shape;
  std::string out_dir;
  std::string tokenizer_dir;
  uint64_t seed = 0;
  DType dtype = DType::kF16;
  int64_t layers = 0;  // 0: the shape's
};

// The refusal to overwrite, shared by both model kinds.
StatusOr<fs::path> OutputPath(const std::string& out_dir) {
  std::error_code ec;
  fs::path out = fs::path(out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // a trailing '/'
  if (out.empty()) return InvalidArgumentError("--out is empty");
  if (fs::exists(out, ec) && (!fs::is_directory(out, ec) || !fs::is_empty(out, ec)))
    return FailedPreconditionError(out_dir + ": exists and is not an empty directory; refusing to overwrite it");
  return out;
}

// "vim-tiny" | "vim-small" | "vim-base": the released 224/16 ImageNet shapes (--layers overrides depth).
Status MakeVimModel(const MakeModelOptions& o) {
  const auto start = std::chrono::steady_clock::now();
  MQ_ASSIGN_OR_RETURN(VimConfig config, ReleasedVimConfig(o.shape.substr(4)));
  if (o.layers > 0) config.depth = o.layers;
  MQ_RETURN_IF_ERROR(config.Validate());
  MQ_ASSIGN_OR_RETURN(fs::path out, OutputPath(o.out_dir));
  MQ_ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));
  ModelWriter w;
  w.dtype = o.dtype;
  w.seed = o.seed;
  w.st.SetMetadata("format", "pt");
  w.st.SetMetadata("mq_make_model", "shape=" + o.shape + " seed=" + std::to_string(o.seed));
  AddVimTensors(config, w);
  MQ_RETURN_IF_ERROR(w.st.Write(staged.File("model.safetensors").string()));
  nlohmann::json cj = config.ToJson();
  cj["torch_dtype"] = o.dtype == DType::kF16 ? "float16" : "float32";
  MQ_RETURN_IF_ERROR(staged.WriteText("config.json", cj.dump(2) + "\n"));
  MQ_RETURN_IF_ERROR(staged.Commit());
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("make-model: shape %s (D %lld x %lld layers, %lldx%lld/%lld) -> %s: %lld parameters, %lld bytes (%s), %.1f s\n",
              o.shape.c_str(), static_cast<long long>(config.embed_dim), static_cast<long long>(config.depth),
              static_cast<long long>(config.img_size), static_cast<long long>(config.img_size),
              static_cast<long long>(config.patch_size), out.string().c_str(), static_cast<long long>(w.parameters),
              static_cast<long long>(w.bytes), DTypeName(o.dtype), seconds);
  return OkStatus();
}

Status MakeModel(const MakeModelOptions& o) {
  if (o.shape.rfind("vim-", 0) == 0) return MakeVimModel(o);
  const auto start = std::chrono::steady_clock::now();
  MQ_ASSIGN_OR_RETURN(MambaConfig config, ModelShapeConfig(o.shape));
  if (o.layers > 0) config.num_hidden_layers = o.layers;
  MQ_RETURN_IF_ERROR(config.Validate());

  std::error_code ec;
  fs::path out = fs::path(o.out_dir).lexically_normal();
  if (out.filename().empty()) out = out.parent_path();  // a trailing '/'
  if (out.empty()) return InvalidArgumentError("--out is empty");
  if (fs::exists(out, ec) && (!fs::is_directory(out, ec) || !fs::is_empty(out, ec)))
    return FailedPreconditionError(o.out_dir + ": exists and is not an empty directory; refusing to overwrite it");

  const fs::path tokenizer_json = fs::path(o.tokenizer_dir) / "tokenizer.json";
  MQ_ASSIGN_OR_RETURN(Tokenizer tokenizer, Tokenizer::LoadFromFile(tokenizer_json.string()));
  if (tokenizer.vocab_size() > config.vocab_size)
    return InvalidArgumentError(tokenizer_json.string() + ": " + std::to_string(tokenizer.vocab_size()) +
                                " tokens do not fit the model's vocabulary of " + std::to_string(config.vocab_size));

  MQ_ASSIGN_OR_RETURN(StagedDirectory staged, StagedDirectory::Create(out));

  ModelWriter w;
  w.dtype = o.dtype;
  w.seed = o.seed;
  w.st.SetMetadata("format", "pt");
  w.st.SetMetadata("mq_make_model", "shape=" + o.shape + " seed=" + std::to_string(o.seed));
  AddModelTensors(config, w);
  MQ_RETURN_IF_ERROR(w.st.Write(staged.File("model.safetensors").string()));
  MQ_RETURN_IF_ERROR(staged.WriteText("config.json", ConfigJson(config, o.dtype).dump(2) + "\n"));
  for (const char* f : {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"})
    MQ_RETURN_IF_ERROR(staged.CopyIfExists(fs::path(o.tokenizer_dir) / f, f));
  MQ_RETURN_IF_ERROR(staged.Commit());

  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  const auto file_bytes = fs::file_size(out / "model.safetensors", ec);
  std::printf("make-model: shape %s (d %lld x %lld layers) -> %s: %lld parameters, %lld bytes (%s model.safetensors), "
              "%.1f s\n",
              o.shape.c_str(), static_cast<long long>(config.hidden_size),
              static_cast<long long>(config.num_hidden_layers), out.string().c_str(),
              static_cast<long long>(w.parameters), static_cast<long long>(ec ? w.bytes : file_bytes),
              DTypeName(o.dtype), seconds);
  return OkStatus();
}

}  // namespace

int RunMakeModelCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {}, {"shape", "out", "tokenizer-from", "seed", "dtype", "layers", "threads"});
  if (!cl.ok()) return ReportError(cl.status());
  MakeModelOptions o;
  auto shape = cl->Require("shape");
  auto out = cl->Require("out");
  const bool vim = cl->Get("shape").value_or("").rfind("vim-", 0) == 0;  // Vim models have no tokenizer
  auto tokenizer = vim ? StatusOr<std::string>(cl->Get("tokenizer-from").value_or("")) : cl->Require("tokenizer-from");
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  auto layers = cl->GetInt("layers", 0, 1, 1024);
  auto threads = cl->GetInt("threads", 0, 1, 4096);
  for (const Status& s :
       {shape.status(), out.status(), tokenizer.status(), seed.status(), layers.status(), threads.status()})
    if (!s.ok()) return ReportError(s);
  if (*threads > 0) cpu::SetCpuThreads(static_cast<int>(*threads));
  o.shape = *shape;
  o.out_dir = *out;
  o.tokenizer_dir = *tokenizer;
  o.seed = static_cast<uint64_t>(*seed);
  o.layers = *layers;
  // Released Vim checkpoints are float32; the Mamba shapes default to float16 (their size).
  const std::string dtype = cl->Get("dtype").value_or(vim ? "f32" : "f16");
  if (dtype == "f16") {
    o.dtype = DType::kF16;
  } else if (dtype == "f32") {
    o.dtype = DType::kF32;
  } else {
    return ReportError(InvalidArgumentError("--dtype must be f16 or f32, got \"" + dtype + "\""));
  }
  const Status s = MakeModel(o);
  return s.ok() ? 0 : ReportError(s);
}

}  // namespace mq::tools
