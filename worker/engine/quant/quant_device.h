// Picks the device of a quantization job by name:
//   "cpu"  — the CPU reference;
//   "cuda" — the GPU; fails when there is none or the job needs a step the GPU does not run;
//   "auto" — the GPU when one is usable and runs every step of this job, else the CPU.
// Header-only on purpose: the engine library builds without CUDA, and only binaries that link
// the CUDA backend (mq_engine_cuda, which defines MQ_HAVE_CUDA for them) can construct it.
#pragma once

#include <memory>
#include <string>

#include "quant/cpu_quant_accelerator.h"
#include "quant/quant_spec.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"
#if defined(MQ_HAVE_CUDA)
#include "cuda/cuda_quant_accelerator.h"
#endif

namespace mq::quant {

// `why_not_gpu` (optional) receives the reason "auto" chose the CPU.
inline StatusOr<std::unique_ptr<QuantAccelerator>> OpenQuantDevice(const std::string& device,
                                                                   const QuantizeOptions& options,
                                                                   std::string* why_not_gpu = nullptr) {
  if (device != "cpu" && device != "cuda" && device != "auto")
    return InvalidArgumentError("device must be cpu, cuda or auto, not '" + device + "'");
  if (device == "cpu") return std::unique_ptr<QuantAccelerator>(new CpuQuantAccelerator());
  std::string reason;
#if defined(MQ_HAVE_CUDA)
  {
    auto gpu = cuda::CudaQuantAccelerator::Create();
    if (gpu.ok()) {
      MQ_ASSIGN_OR_RETURN(QuantSpec spec, QuantSpec::FromOptions(options));
      Status supported = (*gpu)->CheckSupported(spec);
      if (supported.ok()) return std::unique_ptr<QuantAccelerator>(std::move(*gpu));
      if (device == "cuda") return supported;
      reason = supported.message();
    } else {
      if (device == "cuda") return gpu.status();
      reason = gpu.status().message();
    }
  }
#else
  if (device == "cuda") return UnavailableError("this build has no CUDA backend (built without a CUDA toolkit)");
  reason = "built without a CUDA toolkit";
#endif
  if (why_not_gpu != nullptr) *why_not_gpu = reason;
  return std::unique_ptr<QuantAccelerator>(new CpuQuantAccelerator());
}

}  // namespace mq::quant
