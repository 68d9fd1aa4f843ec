#include "cuda/cuda_quant_accelerator.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "cuda/cuda_check.h"
#include "cuda/cuda_mamba_model.h"
#include "cuda/quant_kernels.h"
#include "quant/quant_spec.h"

namespace mq::cuda {
namespace {

// Tokens per calibration forward: big enough for efficient GEMMs and DSYRKs, small enough that
// the 2.8B shape's activations stay a few GB.
constexpr int64_t kCalibrationTokens = 16384;
// Positions per evaluation forward (the logits of both models are [positions, V] float on the device).
constexpr int64_t kEvaluationPositions = 4096;
// Rows of one float64 product chunk: bounds the scratch to 3 × 32M doubles.
constexpr int64_t kProductElements = 32ll << 20;

// Sites the FP16 forward hands to its activation tap; kSsmState comes from the scan's own record.
bool Tappable(ActivationSite s) {
  return s == ActivationSite::kInProjInput || s == ActivationSite::kXProjInput || s == ActivationSite::kDtProjInput ||
         s == ActivationSite::kOutProjInput || s == ActivationSite::kSsmC;
}

}  // namespace

template <typename T>
Status CudaQuantAccelerator::Reserve(DeviceBuffer<T>* b, size_t n) {
  if (b->size() >= n) return OkStatus();
  *b = DeviceBuffer<T>();  // free first: the old and the new buffer need not coexist
  MQ_ASSIGN_OR_RETURN(*b, DeviceBuffer<T>::Allocate(n));
  return OkStatus();
}

StatusOr<std::unique_ptr<CudaQuantAccelerator>> CudaQuantAccelerator::Create() {
  if (!DeviceAvailable()) return UnavailableError("no CUDA device is available");
  std::unique_ptr<CudaQuantAccelerator> a(new CudaQuantAccelerator());
  int dev = 0;
  MQ_CUDA_RETURN_IF_ERROR(cudaGetDevice(&dev));
  cudaDeviceProp prop{};
  MQ_CUDA_RETURN_IF_ERROR(cudaGetDeviceProperties(&prop, dev));
  a->name_ = std::string("cuda (") + prop.name + ")";
  MQ_ASSIGN_OR_RETURN(a->stream_, CudaStream::Create());
  MQ_CUBLAS_RETURN_IF_ERROR(cublasCreate(&a->cublas_));
  MQ_CUBLAS_RETURN_IF_ERROR(cublasSetStream(a->cublas_, a->stream_.get()));
  MQ_CUSOLVER_RETURN_IF_ERROR(cusolverDnCreate(&a->solver_));
  MQ_CUSOLVER_RETURN_IF_ERROR(cusolverDnSetStream(a->solver_, a->stream_.get()));
  return std::move(a);
}

CudaQuantAccelerator::~CudaQuantAccelerator() {
  if (stream_.get() != nullptr) cudaStreamSynchronize(stream_.get());
  if (solver_ != nullptr) cusolverDnDestroy(solver_);
  if (cublas_ != nullptr) cublasDestroy(cublas_);
}

Status CudaQuantAccelerator::CheckSupported(const quant::QuantSpec& spec) const {
  if (spec.scope_full && !spec.state_scale_per_channel)
    return UnimplementedError("GPU quantization: scope `full` with one h scale per time step (state_granularity "
                              "per_step) cannot run on the GPU; use per_step_channel or the CPU");
  if (spec.act_mode == ActScaleMode::kPerTensorStatic)
    return UnimplementedError("GPU quantization: static activation scales need a forward of the rotated float model, "
                              "which the CUDA backend does not run; use per_token activations or the CPU");
  if (spec.quantize_lm_head)
    return UnimplementedError("GPU quantization: the CUDA backend runs the LM head in FP16 only; run it on the CPU");
  return OkStatus();
}

StatusOr<quant::CalibrationStats> CudaQuantAccelerator::Calibrate(
    const MambaWeights& w, const std::vector<int32_t>& tokens, const std::vector<int64_t>& starts, int64_t seq_len,
    const quant::CalibrationRequest& request, const std::function<bool(int64_t, int64_t)>& progress) {
  for (ActivationSite s : request.sites)
    if (!Tappable(s) && s != ActivationSite::kSsmState)
      return UnimplementedError(std::string("GPU calibration cannot observe ") + ActivationSiteName(s));
  if (request.covariance_sites.count(ActivationSite::kSsmState) || request.covariance_sites.count(ActivationSite::kSsmC))
    return UnimplementedError("GPU calibration keeps no covariance of the SSM state or C");
  const bool observe_state = request.sites.count(ActivationSite::kSsmState) > 0;
  if (request.keep_row_absmax) return UnimplementedError("GPU calibration does not keep per-token maxima");
  if (seq_len < 1) return InvalidArgumentError("calibration needs seq_len ≥ 1");
  for (int64_t s : starts)
    if (s < 0 || s + seq_len > static_cast<int64_t>(tokens.size()))
      return InvalidArgumentError("calibration window outside the token stream");

  const int64_t per_forward = std::clamp<int64_t>(kCalibrationTokens / seq_len, 1, 64);
  CudaModelOptions mo;
  mo.max_tokens = per_forward * seq_len;
  mo.max_batch = mo.num_slots = per_forward;
  mo.max_logit_rows = 1;
  std::unique_ptr<CudaMambaModel> model;
  {
    StepTimer timer(this, "calibration_model_upload");
    MQ_ASSIGN_OR_RETURN(model, CudaMambaModel::Create(w, mo));
  }
  if (model->int8()) return InvalidArgumentError("calibration runs the float model, not a quantized one");
  if (observe_state) MQ_RETURN_IF_ERROR(model->ObserveStateAbsMax(true));

  struct DeviceStats {
    int64_t cols = 0, rows = 0;
    DeviceBuffer<float> absmax;
    DeviceBuffer<double> sum, moment;
  };
  std::map<quant::SiteKey, DeviceStats> dev;
  DeviceBuffer<double> wide;  // one tap's activations in float64, the DSYRK operand
  MQ_RETURN_IF_ERROR(model->SetActivationTap([&](const ActivationTapView& v) -> Status {
    if (request.sites.count(v.site) == 0) return OkStatus();
    DeviceStats& s = dev[{static_cast<int>(v.layer), v.site}];
    const bool cov = request.covariance_sites.count(v.site) > 0;
    if (s.cols == 0) {
      s.cols = v.cols;
      const size_t c = static_cast<size_t>(v.cols);
      MQ_ASSIGN_OR_RETURN(s.absmax, DeviceBuffer<float>::Allocate(c));
      MQ_ASSIGN_OR_RETURN(s.sum, DeviceBuffer<double>::Allocate(c));
      MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(s.absmax.get(), 0, s.absmax.bytes(), v.stream));
      MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(s.sum.get(), 0, s.sum.bytes(), v.stream));
      if (cov) {
        MQ_ASSIGN_OR_RETURN(s.moment, DeviceBuffer<double>::Allocate(c * c));
        MQ_CUDA_RETURN_IF_ERROR(cudaMemsetAsync(s.moment.get(), 0, s.moment.bytes(), v.stream));
      }
    }
    if (v.xf != nullptr) {
      MQ_RETURN_IF_ERROR(LaunchColumnStats(v.xf, v.ld, v.rows, v.cols, s.absmax.get(), s.sum.get(), v.stream));
    } else {
      MQ_RETURN_IF_ERROR(LaunchColumnStats(v.x, v.ld, v.rows, v.cols, s.absmax.get(), s.sum.get(), v.stream));
    }
    if (cov) {
      MQ_RETURN_IF_ERROR(Reserve(&wide, static_cast<size_t>(mo.max_tokens * v.cols)));
      MQ_RETURN_IF_ERROR(LaunchWidenHalf(v.x, v.ld, v.rows, v.cols, wide.get(), v.stream));
      // Row-major X [rows, cols] is X^T column-major: DSYRK's A·Aᵀ is XᵀX. Column-major "lower"
      // is the row-major upper triangle, which SiteStats::SecondMoment reads (as the CPU dsyrk fills).
      const double one = 1.0;
      MQ_CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, v.stream));
      MQ_CUBLAS_RETURN_IF_ERROR(cublasDsyrk(cublas_, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, static_cast<int>(v.cols),
                                            static_cast<int>(v.rows), &one, wide.get(), static_cast<int>(v.cols), &one,
                                            s.moment.get(), static_cast<int>(v.cols)));
    }
    s.rows += v.rows;
    return OkStatus();
  }));

  const int64_t total = static_cast<int64_t>(starts.size());
  std::vector<int32_t> ids(static_cast<size_t>(per_forward * seq_len)), slots(static_cast<size_t>(per_forward));
  for (int64_t b = 0; b < per_forward; ++b) slots[b] = static_cast<int32_t>(b);
  Status run = OkStatus();
  std::unique_ptr<StepTimer> forward_timer = std::make_unique<StepTimer>(this, "calibration_forward_and_statistics");
  for (int64_t i0 = 0; i0 < total && run.ok(); i0 += per_forward) {
    const int64_t nb = std::min(per_forward, total - i0);
    for (int64_t b = 0; b < nb; ++b) std::copy_n(tokens.begin() + starts[i0 + b], seq_len, ids.begin() + b * seq_len);
    std::vector<int32_t> used(slots.begin(), slots.begin() + nb);
    run = model->ResetSlots(used);  // every window starts from an empty state
    if (run.ok())
      run = model->Forward(std::vector<int32_t>(ids.begin(), ids.begin() + nb * seq_len), used, nb, seq_len,
                         LogitsMode::kNone, nullptr);
    if (run.ok() && progress && !progress(i0 + nb, total)) run = CancelledError("calibration cancelled");
  }
  forward_timer.reset();
  MQ_CUBLAS_RETURN_IF_ERROR(cublasSetStream(cublas_, stream_.get()));
  MQ_RETURN_IF_ERROR(run);

  StepTimer timer(this, "calibration_statistics_download");
  quant::CalibrationStats stats;
  if (observe_state) {
    // max|h| per state index; the CPU's observer counts E rows a step (the sum is not taken here).
    MQ_ASSIGN_OR_RETURN(std::vector<float> hmax, model->StateAbsMax());
    const int64_t N = w.N(), steps = static_cast<int64_t>(starts.size()) * seq_len;
    for (int64_t l = 0; l < static_cast<int64_t>(w.layers.size()); ++l) {
      quant::SiteStats& s = stats.mutable_sites()[{static_cast<int>(l), ActivationSite::kSsmState}];
      s.channels = N;
      s.rows = steps * w.E();
      s.absmax.assign(hmax.begin() + l * N, hmax.begin() + (l + 1) * N);
      s.sum.assign(static_cast<size_t>(N), 0.0);
    }
  }
  for (auto& [key, d] : dev) {
    quant::SiteStats& s = stats.mutable_sites()[key];
    s.channels = d.cols;
    s.rows = d.rows;
    MQ_ASSIGN_OR_RETURN(s.absmax, d.absmax.ToHost());
    MQ_ASSIGN_OR_RETURN(s.sum, d.sum.ToHost());
    if (d.moment.size() > 0) {
      MQ_ASSIGN_OR_RETURN(s.moment, d.moment.ToHost());
    }
  }
  return stats;
}

StatusOr<std::vector<double>> CudaQuantAccelerator::Eigenvectors(const std::vector<double>& sigma, int64_t n,
                                                                 std::vector<double>* eigenvalues) {
  cudaStream_t st = stream_.get();
  // Symmetric: the row-major input is its own column-major transpose.
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<double> a, DeviceBuffer<double>::FromHost(sigma));
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<double> lambda, DeviceBuffer<double>::Allocate(static_cast<size_t>(n)));
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<int> info, DeviceBuffer<int>::Allocate(1));
  const int ni = static_cast<int>(n);
  int lwork = 0;
  MQ_CUSOLVER_RETURN_IF_ERROR(cusolverDnDsyevd_bufferSize(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, ni,
                                                          a.get(), ni, lambda.get(), &lwork));
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<double> work, DeviceBuffer<double>::Allocate(static_cast<size_t>(std::max(lwork, 1))));
  MQ_CUSOLVER_RETURN_IF_ERROR(cusolverDnDsyevd(solver_, CUSOLVER_EIG_MODE_VECTOR, CUBLAS_FILL_MODE_LOWER, ni, a.get(), ni,
                                               lambda.get(), work.get(), lwork, info.get()));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  MQ_ASSIGN_OR_RETURN(std::vector<int> code, info.ToHost());
  if (code[0] != 0) return InternalError("KLT: cuSOLVER eigendecomposition failed (info " + std::to_string(code[0]) + ")");
  MQ_ASSIGN_OR_RETURN(std::vector<double> vecs, a.ToHost());
  MQ_ASSIGN_OR_RETURN(std::vector<double> vals, lambda.ToHost());
  // Column-major eigenvectors, ascending; KltBasis's contract is row-major K, descending.
  std::vector<double> k(static_cast<size_t>(n * n));
  for (int64_t col = 0; col < n; ++col) {
    const double* v = vecs.data() + (n - 1 - col) * n;
    for (int64_t row = 0; row < n; ++row) k[row * n + col] = v[row];
  }
  if (eigenvalues != nullptr) {
    eigenvalues->resize(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) (*eigenvalues)[i] = vals[n - 1 - i];
  }
  return k;
}

Status CudaQuantAccelerator::UploadRotation(const std::vector<double>& r) {
  if (r == r_host_ && r_dev_.size() == r.size()) return OkStatus();
  MQ_RETURN_IF_ERROR(Reserve(&r_dev_, r.size()));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(r_dev_.get(), r.data(), r.size() * sizeof(double), cudaMemcpyHostToDevice,
                                          stream_.get()));
  r_host_ = r;
  return OkStatus();
}

Status CudaQuantAccelerator::RightProduct(float* rows, int64_t m_total, int64_t n, const std::vector<double>& r) {
  cudaStream_t st = stream_.get();
  MQ_RETURN_IF_ERROR(UploadRotation(r));
  const int64_t chunk = std::clamp<int64_t>(kProductElements / n, 1, m_total);
  MQ_RETURN_IF_ERROR(Reserve(&f_, static_cast<size_t>(chunk * n)));
  MQ_RETURN_IF_ERROR(Reserve(&a_, static_cast<size_t>(chunk * n)));
  MQ_RETURN_IF_ERROR(Reserve(&c_, static_cast<size_t>(chunk * n)));
  const double one = 1.0, zero = 0.0;
  for (int64_t r0 = 0; r0 < m_total; r0 += chunk) {
    const int64_t m = std::min(chunk, m_total - r0);
    float* host = rows + r0 * n;
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(f_.get(), host, m * n * sizeof(float), cudaMemcpyHostToDevice, st));
    MQ_RETURN_IF_ERROR(LaunchWidenFloat(f_.get(), m * n, a_.get(), st));
    // Row-major rows·R is, column-major, Rᵀ(n×n view of R) times the n×m view of the rows.
    MQ_CUBLAS_RETURN_IF_ERROR(cublasDgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_N, static_cast<int>(n), static_cast<int>(m),
                                          static_cast<int>(n), &one, r_dev_.get(), static_cast<int>(n), a_.get(),
                                          static_cast<int>(n), &zero, c_.get(), static_cast<int>(n)));
    MQ_RETURN_IF_ERROR(LaunchNarrowDouble(c_.get(), m * n, f_.get(), st));
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(host, f_.get(), m * n * sizeof(float), cudaMemcpyDeviceToHost, st));
  }
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  return OkStatus();
}

Status CudaQuantAccelerator::LeftTransposedProduct(float* rows, int64_t n, int64_t cols, const std::vector<double>& r) {
  cudaStream_t st = stream_.get();
  MQ_RETURN_IF_ERROR(UploadRotation(r));
  const size_t count = static_cast<size_t>(n * cols);
  MQ_RETURN_IF_ERROR(Reserve(&f_, count));
  MQ_RETURN_IF_ERROR(Reserve(&a_, count));
  MQ_RETURN_IF_ERROR(Reserve(&c_, count));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(f_.get(), rows, count * sizeof(float), cudaMemcpyHostToDevice, st));
  MQ_RETURN_IF_ERROR(LaunchWidenFloat(f_.get(), static_cast<int64_t>(count), a_.get(), st));
  // Row-major Rᵀ·B is, column-major, Bᵀ(cols×n view of B) times R (the transposed n×n view of R).
  const double one = 1.0, zero = 0.0;
  MQ_CUBLAS_RETURN_IF_ERROR(cublasDgemm(cublas_, CUBLAS_OP_N, CUBLAS_OP_T, static_cast<int>(cols), static_cast<int>(n),
                                        static_cast<int>(n), &one, a_.get(), static_cast<int>(cols), r_dev_.get(),
                                        static_cast<int>(n), &zero, c_.get(), static_cast<int>(cols)));
  MQ_RETURN_IF_ERROR(LaunchNarrowDouble(c_.get(), static_cast<int64_t>(count), f_.get(), st));
  MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(rows, f_.get(), count * sizeof(float), cudaMemcpyDeviceToHost, st));
  MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(st));
  return OkStatus();
}

StatusOr<ComparisonResult> CudaQuantAccelerator::Compare(const MambaWeights& reference, const MambaWeights& candidate,
                                                         const std::vector<int32_t>& tokens, int64_t window,
                                                         const EvalProgress& progress) {
  if (reference.V() != candidate.V()) return InvalidArgumentError("models have different vocabularies");
  StepTimer timer(this, "evaluation");
  MQ_ASSIGN_OR_RETURN(const std::vector<int64_t> starts, EvaluationWindows(static_cast<int64_t>(tokens.size()), window));
  const int64_t per_forward = std::clamp<int64_t>(kEvaluationPositions / window, 1, 64);
  CudaModelOptions mo;
  mo.max_tokens = mo.max_logit_rows = per_forward * window;
  mo.max_batch = mo.num_slots = per_forward;
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<CudaMambaModel> ref, CudaMambaModel::Create(reference, mo));
  MQ_ASSIGN_OR_RETURN(std::unique_ptr<CudaMambaModel> cand, CudaMambaModel::Create(candidate, mo));
  const int64_t V = reference.V();
  for (int32_t t : tokens)
    if (t < 0 || t >= V) return InvalidArgumentError("token id " + std::to_string(t) + " outside the vocabulary");
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<int32_t> targets, DeviceBuffer<int32_t>::Allocate(static_cast<size_t>(mo.max_tokens)));
  MQ_ASSIGN_OR_RETURN(DeviceBuffer<double> rows_out, DeviceBuffer<double>::Allocate(static_cast<size_t>(4 * mo.max_tokens)));
  ComparisonSums sums;
  const int64_t total = static_cast<int64_t>(starts.size());
  std::vector<double> host_rows;
  for (int64_t i0 = 0; i0 < total; i0 += per_forward) {
    const int64_t nb = std::min(per_forward, total - i0);
    const int64_t T = nb * window;
    std::vector<int32_t> ids(static_cast<size_t>(T)), tgt(static_cast<size_t>(T), -1), slots(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) {
      std::copy_n(tokens.begin() + starts[i0 + b], window, ids.begin() + b * window);
      for (int64_t l = 0; l + 1 < window; ++l) tgt[b * window + l] = ids[b * window + l + 1];
      slots[b] = static_cast<int32_t>(b);
    }
    for (CudaMambaModel* m : {ref.get(), cand.get()}) {
      MQ_RETURN_IF_ERROR(m->ResetSlots(slots));
      MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m->ids_buffer(), ids.data(), ids.size() * sizeof(int32_t),
                                              cudaMemcpyHostToDevice, m->stream()));
      MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(m->slots_buffer(), slots.data(), slots.size() * sizeof(int32_t),
                                              cudaMemcpyHostToDevice, m->stream()));
      MQ_RETURN_IF_ERROR(m->EnqueueForward(m->ids_buffer(), m->slots_buffer(), nb, window, LogitsMode::kAll));
    }
    MQ_CUDA_RETURN_IF_ERROR(cudaMemcpyAsync(targets.get(), tgt.data(), tgt.size() * sizeof(int32_t),
                                            cudaMemcpyHostToDevice, stream_.get()));
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(ref->stream()));
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(cand->stream()));
    MQ_RETURN_IF_ERROR(LaunchCompareRows(ref->logits_dev(), cand->logits_dev(), V, targets.get(), T, rows_out.get(),
                                         stream_.get()));
    MQ_CUDA_RETURN_IF_ERROR(cudaStreamSynchronize(stream_.get()));
    host_rows.resize(static_cast<size_t>(4 * T));
    MQ_RETURN_IF_ERROR(rows_out.CopyToHost(host_rows.data(), host_rows.size()));
    for (int64_t t = 0; t < T; ++t) {
      if (tgt[t] < 0) continue;
      const double* o = host_rows.data() + 4 * t;
      sums.nll_reference += o[0];
      sums.nll_candidate += o[1];
      sums.kl += o[2];
      sums.agree += o[3] != 0.0;
      ++sums.positions;
    }
    sums.windows += nb;
    if (progress && !progress(i0 + nb, total)) return CancelledError("evaluation cancelled");
  }
  return sums.Result();
}

}  // namespace mq::cuda
