#include "cuda/cublaslt_gemm.h"

#include <string>

#include "cuda/cuda_check.h"

namespace mq::cuda {

namespace {
enum Kind { kInt8 = 0, kF16OutF16 = 1, kF16OutF32 = 2 };
}

struct CublasLtGemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr, b = nullptr, c = nullptr;
  cublasLtMatmulAlgo_t algo{};
  ~Plan() {
    if (c) cublasLtMatrixLayoutDestroy(c);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

StatusOr<std::unique_ptr<CublasLtGemm>> CublasLtGemm::Create(size_t workspace_bytes) {
  std::unique_ptr<CublasLtGemm> g(new CublasLtGemm());
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtCreate(&g->handle_));
  MQ_ASSIGN_OR_RETURN(g->workspace_, DeviceBuffer<uint8_t>::Allocate(workspace_bytes));
  return std::move(g);
}

CublasLtGemm::~CublasLtGemm() {
  plans_.clear();
  if (handle_ != nullptr) cublasLtDestroy(handle_);
}

StatusOr<CublasLtGemm::Plan*> CublasLtGemm::GetPlan(int kind, int64_t out, int64_t tokens, int64_t k, int64_t ldw,
                                                    int64_t ldx, int64_t ldc) {
  const Key key{kind, out, tokens, k, ldw, ldx, ldc};
  auto it = plans_.find(key);
  if (it != plans_.end()) return it->second.get();
  auto plan = std::make_unique<Plan>();
  const bool int8 = kind == kInt8;
  const cublasComputeType_t compute = int8 ? CUBLAS_COMPUTE_32I : CUBLAS_COMPUTE_32F;
  const cudaDataType_t scale_type = int8 ? CUDA_R_32I : CUDA_R_32F;
  const cudaDataType_t ab_type = int8 ? CUDA_R_8I : CUDA_R_16F;
  const cudaDataType_t c_type = int8 ? CUDA_R_32I : (kind == kF16OutF32 ? CUDA_R_32F : CUDA_R_16F);
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulDescCreate(&plan->op, compute, scale_type));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  MQ_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a, sizeof(trans_a)));
  MQ_CUBLAS_RETURN_IF_ERROR(
      cublasLtMatmulDescSetAttribute(plan->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b, sizeof(trans_b)));
  // Column-major view: A = W as [k, out] (ldw), B = X as [k, tokens] (ldx), C as [out, tokens] (ldc).
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->a, ab_type, k, out, ldw));
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->b, ab_type, k, tokens, ldx));
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatrixLayoutCreate(&plan->c, c_type, out, tokens, ldc));

  cublasLtMatmulPreference_t pref = nullptr;
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatmulPreferenceCreate(&pref));
  const size_t ws = workspace_.size();
  cublasStatus_t st =
      cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws));
  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  if (st == CUBLAS_STATUS_SUCCESS)
    st = cublasLtMatmulAlgoGetHeuristic(handle_, plan->op, plan->a, plan->b, plan->c, plan->c, pref, 1, &result, &found);
  cublasLtMatmulPreferenceDestroy(pref);
  MQ_CUBLAS_RETURN_IF_ERROR(st);
  if (found == 0)
    return UnimplementedError("cuBLASLt has no algorithm for " + std::string(int8 ? "INT8" : "FP16") + " GEMM out=" +
                              std::to_string(out) + " tokens=" + std::to_string(tokens) + " k=" + std::to_string(k));
  plan->algo = result.algo;
  Plan* raw = plan.get();
  plans_.emplace(key, std::move(plan));
  return raw;
}

Status CublasLtGemm::Int8(const int8_t* w, int64_t ldw, const int8_t* x, int64_t ldx, int32_t* acc, int64_t ldc,
                          int64_t out, int64_t tokens, int64_t k, cudaStream_t stream) {
  if (out <= 0 || tokens <= 0) return OkStatus();
  if (k % 4 != 0 || ldw % 4 != 0 || ldx % 4 != 0 || out % 4 != 0)
    return InvalidArgumentError("INT8 GEMM needs k, out and leading dimensions divisible by 4");
  MQ_ASSIGN_OR_RETURN(Plan * plan, GetPlan(kInt8, out, tokens, k, ldw, ldx, ldc));
  const int32_t alpha = 1, beta = 0;
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, x, plan->b, &beta, acc, plan->c, acc,
                                           plan->c, &plan->algo, workspace_.get(), workspace_.size(), stream));
  return OkStatus();
}

Status CublasLtGemm::F16(const __half* w, int64_t ldw, const __half* x, int64_t ldx, void* c, bool c_f32, int64_t ldc,
                         int64_t out, int64_t tokens, int64_t k, cudaStream_t stream) {
  if (out <= 0 || tokens <= 0) return OkStatus();
  MQ_ASSIGN_OR_RETURN(Plan * plan, GetPlan(c_f32 ? kF16OutF32 : kF16OutF16, out, tokens, k, ldw, ldx, ldc));
  const float alpha = 1.0f, beta = 0.0f;
  MQ_CUBLAS_RETURN_IF_ERROR(cublasLtMatmul(handle_, plan->op, &alpha, w, plan->a, x, plan->b, &beta, c, plan->c, c,
                                           plan->c, &plan->algo, workspace_.get(), workspace_.size(), stream));
  return OkStatus();
}

}  // namespace mq::cuda
