#include "cuda/cuda_vim_classifier.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "cuda/cuda_check.h"
#include "cuda/cuda_handles.h"
#include "cuda/cuda_vim_kernels.h"
#include "cuda/cuda_vim_linear.h"
#include "cuda/cuda_vim_math.h"
#include "cuda/device_buffer.h"
#include "vim/vim_model.h"

namespace mq::cuda {
namespace {

using vim::CudaVimLinear;
using vim::LinearMode;

template <typename T>
Status Upload(DeviceBuffer<T>* dst, const std::vector<T>& v) {
  MQ_ASSIGN_OR_RETURN(*dst, DeviceBuffer<T>::FromHost(v));
  return OkStatus();
}
template <typename T>
Status Alloc(DeviceBuffer<T>* dst, int64_t n) {
  MQ_ASSIGN_OR_RETURN(*dst, DeviceBuffer<T>::Allocate(static_cast<size_t>(n)));
  return OkStatus();
}

bool AnyQuantized(const VimWeights& w) {
  if (w.head.quant) return true;
  for (const VimLayerWeights& l : w.layers)
    for (const Linear* lin : {&l.mixer.in_proj, &l.mixer.x_proj, &l.mixer.dt_proj, &l.mixer.out_proj,
                              &l.backward.x_proj, &l.backward.dt_proj})
      if (lin->quant) return true;
  return false;
}

// One direction's parameters besides its linears.
struct Branch {
  DeviceBuffer<float> conv_w, conv_b, A2, D;  // A2 = A·log2 e (the scan's exp2 decay)
  DeviceBuffer<float> dt_bias;                 // dt_proj's bias, added in the scan
  CudaVimLinear x_proj, dt_proj;
};

struct Block {
  DeviceBuffer<float> norm, gate_scale;
  CudaVimLinear in_proj, out_proj;
  Branch dir[2];
};

class CudaVimClassifier final : public ImageClassifier {
 public:
  static StatusOr<std::unique_ptr<CudaVimClassifier>> Create(const VimWeights& w, const CudaVimOptions& o);
  ~CudaVimClassifier() override {
    if (stream_.get() != nullptr) cudaStreamSynchronize(stream_.get());
  }

  const VimConfig& config() const override { return config_; }
  bool quantized() const override { return quantized_; }
  std::string device() const override { return "cuda"; }
  int64_t max_batch() const override { return options_.max_batch; }
  uint64_t device_bytes() const override { return device_bytes_; }
  Status Classify(const float* images, int64_t batch, float* logits) override;
  std::vector<std::pair<std::string, double>> stage_ms() const {
    std::lock_guard<std::mutex> lock(mu_);
    return stage_ms_;
  }

 private:
  CudaVimClassifier() = default;
  Status UploadBlock(const VimLayerWeights& s, int64_t li, Block* b);
  Status AllocateActivations();
  Status Forward(int64_t batch);
  Status Mark(const char* stage);  // stage timing: an event after `stage`
  Status CollectStageTimes();      // after the call's synchronization

  VimConfig config_;
  CudaVimOptions options_;
  bool quantized_ = false;
  LinearMode float_mode_ = LinearMode::kF32;
  int64_t D_ = 0, E_ = 0, N_ = 0, R_ = 0, K_ = 0, L_ = 0, M_ = 0, W_ = 0, CPP_ = 0, classes_ = 0;
  uint64_t device_bytes_ = 0;

  mutable std::mutex mu_;
  CudaStream stream_;
  std::unique_ptr<vim::VimGemms> gemms_;
  vim::LinearScratch scratch_;
  CudaVimLinear patch_, head_;
  DeviceBuffer<float> cls_token_, pos_embed_, norm_f_;
  std::vector<Block> blocks_;
  // Activations for options_.max_batch images.
  DeviceBuffer<float> images_, cols_, tok_, res_, xn_, hid_, xz_, u_, dbc_, delta_, y_, g_, feat_, logits_;
  DeviceBuffer<unsigned long long> first_bad_;  // index of the first non-finite pixel, or all ones
  // Stage timing.
  std::vector<CudaEvent> events_;
  std::vector<const char*> marks_;
  std::vector<std::pair<std::string, double>> stage_ms_;
};

Status CudaVimClassifier::Mark(const char* stage) {
  if (!options_.stage_timing) return OkStatus();
  if (marks_.size() == events_.size()) {
    MQ_ASSIGN_OR_RETURN(CudaEvent e, CudaEvent::Create());
    events_.push_back(std::move(e));
  }
  MQ_RETURN_IF_ERROR(events_[marks_.size()].Record(stream_.get()));
  marks_.push_back(stage);
  return OkStatus();
}

Status CudaVimClassifier::CollectStageTimes() {
  for (size_t i = 1; i < marks_.size(); ++i) {
    MQ_ASSIGN_OR_RETURN(float ms, ElapsedMs(events_[i - 1], events_[i]));
    auto it = std::find_if(stage_ms_.begin(), stage_ms_.end(), [&](const auto& p) { return p.first == marks_[i]; });
    if (it == stage_ms_.end()) {
      stage_ms_.emplace_back(marks_[i], ms);
    } else {
      it->second += ms;
    }
  }
  marks_.clear();
  return OkStatus();
}

Status CudaVimClassifier::UploadBlock(const VimLayerWeights& s, int64_t li, Block* b) {
  const std::string p = "layers." + std::to_string(li) + ".mixer.";
  for (const MambaLayerWeights* m : {&s.mixer, &s.backward})
    if (m->quantize_conv_input || m->quantize_output_product || !m->state_rotation.empty() ||
        !m->conv_weight_scale.empty())
      return UnimplementedError("CUDA Vim: " + p + " uses scope `full` (quantized conv or h·C); scope full runs on the CPU "
                                "(--device cpu); the CUDA Vim classifier runs scope linear");
  MQ_RETURN_IF_ERROR(Upload(&b->norm, s.mixer.norm));
  if (!s.mixer.gate_scale.empty()) MQ_RETURN_IF_ERROR(Upload(&b->gate_scale, s.mixer.gate_scale));
  MQ_ASSIGN_OR_RETURN(b->in_proj, CudaVimLinear::Upload(s.mixer.in_proj, float_mode_, p + "in_proj"));
  MQ_ASSIGN_OR_RETURN(b->out_proj, CudaVimLinear::Upload(s.mixer.out_proj, float_mode_, p + "out_proj"));
  const char* suffix[2] = {"", "_b"};
  for (int d = 0; d < 2; ++d) {
    const MambaLayerWeights& m = d == 0 ? s.mixer : s.backward;
    Branch& br = b->dir[d];
    if (static_cast<int64_t>(m.conv_weight.size()) != E_ * K_ || static_cast<int64_t>(m.conv_bias.size()) != E_ ||
        static_cast<int64_t>(m.A.size()) != E_ * N_ || static_cast<int64_t>(m.D.size()) != E_)
      return InvalidArgumentError("CUDA Vim: " + p + "conv1d" + suffix[d] + ", A or D has the wrong size");
    MQ_RETURN_IF_ERROR(Upload(&br.conv_w, m.conv_weight));
    MQ_RETURN_IF_ERROR(Upload(&br.conv_b, m.conv_bias));
    std::vector<float> a2(m.A.size());
    for (size_t i = 0; i < a2.size(); ++i) a2[i] = m.A[i] * vim::kLog2e;
    MQ_RETURN_IF_ERROR(Upload(&br.A2, a2));
    MQ_RETURN_IF_ERROR(Upload(&br.D, m.D));
    MQ_ASSIGN_OR_RETURN(br.x_proj, CudaVimLinear::Upload(m.x_proj, float_mode_, p + "x_proj" + suffix[d]));
    MQ_ASSIGN_OR_RETURN(br.dt_proj, CudaVimLinear::Upload(m.dt_proj, float_mode_, p + "dt_proj" + suffix[d]));
    if (!m.dt_proj.bias.empty()) MQ_RETURN_IF_ERROR(Upload(&br.dt_bias, m.dt_proj.bias));
    if (br.x_proj.in() != E_ || br.x_proj.out() != W_ || br.dt_proj.in() != R_ || br.dt_proj.out() != E_)
      return InvalidArgumentError("CUDA Vim: " + p + "x_proj/dt_proj" + suffix[d] + " shapes do not match the config");
  }
  if (b->in_proj.in() != D_ || b->in_proj.out() != 2 * E_ || b->out_proj.in() != E_ || b->out_proj.out() != D_)
    return InvalidArgumentError("CUDA Vim: " + p + "in_proj/out_proj shapes do not match the config");
  return OkStatus();
}

StatusOr<std::unique_ptr<CudaVimClassifier>> CudaVimClassifier::Create(const VimWeights& w, const CudaVimOptions& o) {
  MQ_RETURN_IF_ERROR(w.config.Validate());
  if (o.max_batch < 1 || o.max_batch > CudaVimOptions::kMaxBatch)
    return InvalidArgumentError("CUDA Vim: max_batch must be in [1, " + std::to_string(CudaVimOptions::kMaxBatch) + "]");
  std::unique_ptr<CudaVimClassifier> c(new CudaVimClassifier());
  const VimConfig& cf = w.config;
  c->config_ = cf;
  c->options_ = o;
  c->quantized_ = AnyQuantized(w);
  c->float_mode_ = o.fp16 ? LinearMode::kF16 : LinearMode::kF32;
  c->D_ = w.D(), c->E_ = w.E(), c->N_ = w.N(), c->R_ = w.R(), c->K_ = w.K(), c->L_ = w.L();
  c->M_ = cf.num_patches(), c->W_ = c->R_ + 2 * c->N_, c->CPP_ = w.patch_numel(), c->classes_ = cf.num_classes;
  if (c->N_ != vim::kScanState)
    return UnimplementedError("CUDA Vim: d_state must be " + std::to_string(vim::kScanState) + ", got " +
                              std::to_string(c->N_));
  if (static_cast<int64_t>(w.layers.size()) != cf.depth) return InvalidArgumentError("CUDA Vim: layer count != depth");
  if (static_cast<int64_t>(w.patch_weight.size()) != c->D_ * c->CPP_ || static_cast<int64_t>(w.patch_bias.size()) != c->D_ ||
      static_cast<int64_t>(w.cls_token.size()) != c->D_ || static_cast<int64_t>(w.pos_embed.size()) != c->L_ * c->D_ ||
      static_cast<int64_t>(w.norm_f.size()) != c->D_)
    return InvalidArgumentError("CUDA Vim: patch embedding, cls token, positions or norm_f have the wrong size");
  MQ_CUDA_RETURN_IF_ERROR(cudaSetDevice(0));
  MQ_ASSIGN_OR_RETURN(c->stream_, CudaStream::Create());
  MQ_ASSIGN_OR_RETURN(c->gemms_, vim::VimGemms::Create());

  Linear patch;  // the Conv2d as a [D, C·P·P] linear with its bias
  patch.in_features = c->CPP_, patch.out_features = c->D_;
  patch.weight = w.patch_weight, patch.bias = w.patch_bias;
  MQ_ASSIGN_OR_RETURN(c->patch_, CudaVimLinear::Upload(patch, c->float_mode_, "patch_embed.proj"));
  MQ_ASSIGN_OR_RETURN(c->head_, CudaVimLinear::Upload(w.head, c->float_mode_, "head"));
  if (c->head_.in() != c->D_ || c->head_.out() != c->classes_)
    return InvalidArgumentError("CUDA Vim: head shape does not match the config");
  MQ_RETURN_IF_ERROR(Upload(&c->cls_token_, w.cls_token));
  MQ_RETURN_IF_ERROR(Upload(&c->pos_embed_, w.pos_embed));
  MQ_RETURN_IF_ERROR(Upload(&c->norm_f_, w.norm_f));
  c->blocks_.resize(static_cast<size_t>(cf.depth));
  uint64_t bytes = c->patch_.bytes() + c->head_.bytes() + c->cls_token_.bytes() + c->pos_embed_.bytes() + c->norm_f_.bytes();
  for (int64_t li = 0; li < cf.depth; ++li) {
    Block& b = c->blocks_[static_cast<size_t>(li)];
    MQ_RETURN_IF_ERROR(c->UploadBlock(w.layers[static_cast<size_t>(li)], li, &b));
    bytes += b.norm.bytes() + b.gate_scale.bytes() + b.in_proj.bytes() + b.out_proj.bytes();
    for (const Branch& br : b.dir)
      bytes += br.conv_w.bytes() + br.conv_b.bytes() + br.A2.bytes() + br.D.bytes() + br.x_proj.bytes() + br.dt_proj.bytes();
  }
  c->device_bytes_ = bytes;
  MQ_RETURN_IF_ERROR(c->AllocateActivations());
  return std::move(c);
}

Status CudaVimClassifier::AllocateActivations() {
  const int64_t B = options_.max_batch, T = B * L_, TP = B * M_;
  MQ_RETURN_IF_ERROR(Alloc(&images_, B * config_.image_numel()));
  MQ_RETURN_IF_ERROR(Alloc(&cols_, TP * CPP_));
  MQ_RETURN_IF_ERROR(Alloc(&tok_, TP * D_));
  for (auto* b : {&res_, &xn_, &hid_}) MQ_RETURN_IF_ERROR(Alloc(b, T * D_));
  MQ_RETURN_IF_ERROR(Alloc(&xz_, T * 2 * E_));
  for (auto* b : {&u_, &delta_, &y_}) MQ_RETURN_IF_ERROR(Alloc(b, 2 * T * E_));
  MQ_RETURN_IF_ERROR(Alloc(&dbc_, 2 * T * W_));
  MQ_RETURN_IF_ERROR(Alloc(&g_, T * E_));
  MQ_RETURN_IF_ERROR(Alloc(&feat_, B * D_));
  MQ_RETURN_IF_ERROR(Alloc(&logits_, B * classes_));
  MQ_RETURN_IF_ERROR(Alloc(&first_bad_, 1));
  MQ_RETURN_IF_ERROR(patch_.Reserve(TP, &scratch_));
  MQ_RETURN_IF_ERROR(head_.Reserve(B, &scratch_));
  for (const Block& b : blocks_) {
    MQ_RETURN_IF_ERROR(b.in_proj.Reserve(T, &scratch_));
    MQ_RETURN_IF_ERROR(b.out_proj.Reserve(T, &scratch_));
    for (const Branch& br : b.dir) {
      MQ_RETURN_IF_ERROR(br.x_proj.Reserve(T, &scratch_));
      MQ_RETURN_IF_ERROR(br.dt_proj.Reserve(T, &scratch_));
    }
  }
  for (const DeviceBuffer<float>* b : {&images_, &cols_, &tok_, &res_, &xn_, &hid_, &xz_, &u_, &delta_, &y_, &dbc_, &g_,
                                       &feat_, &logits_, &scratch_.sx, &scratch_.xt})
    device_bytes_ += b->bytes();
  device_bytes_ += scratch_.x16.bytes() + scratch_.x8.bytes() + scratch_.acc.bytes();
  return OkStatus();
}

Status CudaVimClassifier::Forward(int64_t B) {
  cudaStream_t st = stream_.get();
  vim::VimGemms& g = *gemms_;
  const int64_t T = B * L_;
  // Patch embedding (im2col + GEMM with the bias), then cls token and positions.
  vim::PatchIm2colParams ip;
  ip.images = images_.get(), ip.cols = cols_.get(), ip.batch = B, ip.C = config_.in_chans, ip.H = config_.img_size;
  ip.P = config_.patch_size, ip.S = config_.stride, ip.G = config_.grid_size(), ip.ld = CPP_;
  MQ_RETURN_IF_ERROR(vim::LaunchPatchIm2col(ip, st));
  MQ_RETURN_IF_ERROR(patch_.Forward(cols_.get(), CPP_, B * M_, tok_.get(), D_, g, scratch_, st));
  MQ_RETURN_IF_ERROR(Mark("patch"));
  vim::AssembleTokensParams ap;
  ap.tok = tok_.get(), ap.cls_token = cls_token_.get(), ap.pos_embed = pos_embed_.get(), ap.res = res_.get();
  ap.batch = B, ap.M = M_, ap.L = L_, ap.D = D_, ap.cls = config_.cls_token_index();
  MQ_RETURN_IF_ERROR(vim::LaunchAssembleTokens(ap, st));

  const int64_t half = T * E_;  // offset of the backward branch in the [2·B·L, ·] buffers
  for (size_t li = 0; li < blocks_.size(); ++li) {
    const Block& b = blocks_[li];
    vim::ResidualRmsNormParams np;
    np.h = res_.get(), np.add = li > 0 ? hid_.get() : nullptr, np.gamma = b.norm.get(), np.out = xn_.get();
    np.rows = T, np.D = D_, np.eps = config_.norm_epsilon;
    MQ_RETURN_IF_ERROR(vim::LaunchResidualRmsNorm(np, st));
    MQ_RETURN_IF_ERROR(Mark("norm"));
    MQ_RETURN_IF_ERROR(b.in_proj.Forward(xn_.get(), D_, T, xz_.get(), 2 * E_, g, scratch_, st));
    MQ_RETURN_IF_ERROR(Mark("in_proj"));
    vim::BiConvParams cp;
    cp.x = xz_.get(), cp.ld_x = 2 * E_, cp.u = u_.get(), cp.batch = B, cp.L = L_, cp.E = E_, cp.K = K_;
    for (int d = 0; d < 2; ++d) cp.w[d] = b.dir[d].conv_w.get(), cp.bias[d] = b.dir[d].conv_b.get();
    MQ_RETURN_IF_ERROR(vim::LaunchBiConv(cp, st));
    MQ_RETURN_IF_ERROR(Mark("conv"));
    for (int d = 0; d < 2; ++d)
      MQ_RETURN_IF_ERROR(b.dir[d].x_proj.Forward(u_.get() + d * half, E_, T, dbc_.get() + d * T * W_, W_, g, scratch_, st));
    MQ_RETURN_IF_ERROR(Mark("x_proj"));
    for (int d = 0; d < 2; ++d)
      MQ_RETURN_IF_ERROR(
          b.dir[d].dt_proj.Forward(dbc_.get() + d * T * W_, W_, T, delta_.get() + d * half, E_, g, scratch_, st,
                                   /*add_bias=*/false));  // the scan adds it before the softplus
    MQ_RETURN_IF_ERROR(Mark("dt_proj"));
    vim::BiScanParams sp;
    sp.u = u_.get(), sp.delta = delta_.get(), sp.dbc = dbc_.get(), sp.ld_dbc = W_, sp.R = R_;
    for (int d = 0; d < 2; ++d)
      sp.A2[d] = b.dir[d].A2.get(), sp.D[d] = b.dir[d].D.get(), sp.dt_bias[d] = b.dir[d].dt_bias.get();
    sp.y = y_.get(), sp.batch = B, sp.L = L_, sp.E = E_, sp.N = N_;
    MQ_RETURN_IF_ERROR(vim::LaunchBiScan(sp, st));
    MQ_RETURN_IF_ERROR(Mark("scan"));
    vim::GateParams gp;
    gp.y = y_.get(), gp.z = xz_.get() + E_, gp.ld_z = 2 * E_, gp.gate_scale = b.gate_scale.get();
    gp.out_scale = config_.if_divide_out ? 0.5f : 1.0f, gp.g = g_.get(), gp.batch = B, gp.L = L_, gp.E = E_;
    MQ_RETURN_IF_ERROR(vim::LaunchGate(gp, st));
    MQ_RETURN_IF_ERROR(Mark("gate"));
    MQ_RETURN_IF_ERROR(b.out_proj.Forward(g_.get(), E_, T, hid_.get(), D_, g, scratch_, st));
    MQ_RETURN_IF_ERROR(Mark("out_proj"));
  }
  // The last block's add and the final norm on the cls rows only, then the head.
  vim::ResidualRmsNormParams fp;
  fp.h = res_.get(), fp.add = blocks_.empty() ? nullptr : hid_.get(), fp.gamma = norm_f_.get(), fp.out = feat_.get();
  fp.rows = B, fp.D = D_, fp.row_stride = L_, fp.row_offset = config_.cls_token_index(), fp.eps = config_.norm_epsilon;
  MQ_RETURN_IF_ERROR(vim::LaunchResidualRmsNorm(fp, st));
  MQ_RETURN_IF_ERROR(head_.Forward(feat_.get(), D_, B, logits_.get(), classes_, g, scratch_, st));
  return Mark("head");
}

Status CudaVimClassifier::Classify(const float* images, int64_t batch, float* logits) {
  if (images == nullptr || logits == nullptr) return InvalidArgumentError("Classify: null images or logits");
  if (batch < 1 || batch > options_.max_batch)
    return InvalidArgumentError("Classify: batch " + std::to_string(batch) + " outside [1, " +
                                std::to_string(options_.max_batch) + "]");
  const int64_t n = batch * config_.image_numel();
  std::lock_guard<std::mutex> lock(mu_);
  cudaStream_t st = stream_.get();
  // Pixels are checked on the device, where the copy lands (a host loop over 256 images of 224²
  // costs as much as a forward); the forward runs anyway and its logits are not returned.
  MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(first_bad_.get(), 0xff, sizeof(unsigned long long), st));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(images_.get(), images, n * sizeof(float), cudaMemcpyHostToDevice, st));
  MQ_RETURN_IF_ERROR(Mark("start"));
  MQ_RETURN_IF_ERROR(vim::LaunchFirstNonFinite(images_.get(), n, first_bad_.get(), st));
  MQ_RETURN_IF_ERROR(Forward(batch));
  unsigned long long first_bad = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(&first_bad, first_bad_.get(), sizeof(first_bad), cudaMemcpyDeviceToHost, st));
  // Logits stage through a host buffer: a call with a bad pixel leaves the caller's untouched.
  std::vector<float> out(static_cast<size_t>(batch * classes_));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(out.data(), logits_.get(), out.size() * sizeof(float), cudaMemcpyDeviceToHost, st));
  MQ_RETURN_IF_ERROR(stream_.Synchronize());
  if (options_.stage_timing) MQ_RETURN_IF_ERROR(CollectStageTimes());
  if (first_bad != ~0ull)
    return InvalidArgumentError("Classify: non-finite pixel at index " + std::to_string(first_bad));
  std::copy(out.begin(), out.end(), logits);
  return OkStatus();
}

}  // namespace

std::vector<std::pair<std::string, double>> CudaVimStageTimes(const ImageClassifier& classifier) {
  const auto* c = dynamic_cast<const CudaVimClassifier*>(&classifier);
  return c == nullptr ? std::vector<std::pair<std::string, double>>{} : c->stage_ms();
}

StatusOr<std::unique_ptr<ImageClassifier>> CreateCudaVimClassifier(const VimWeights& weights,
                                                                   const CudaVimOptions& options) {
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<CudaVimClassifier> c, CudaVimClassifier::Create(weights, options));
  return std::unique_ptr<ImageClassifier>(std::move(c));
}

StatusOr<std::unique_ptr<ImageClassifier>> OpenCudaVimClassifier(const std::string& model_dir,
                                                                 const CudaVimOptions& options) {
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<VimModel> model, VimModel::Load(model_dir));
  return CreateCudaVimClassifier(model->weights(), options);
}

}  // namespace mq::cuda
