// A quantization job of a Vision Mamba model (config.json `model_type: vim`): the engine's
// QuantizeVimModel on the job's image datasets (calibration, and evaluation when the job has
// one: vim_image_set.h files with `images` and `labels`). The report carries float and quantized
// top-1 accuracy, top-1 agreement and the mean KL on the evaluation images.
#pragma once

#include <string>

#include "job_executor.h"

namespace mq::worker {

// Whether the job's model is a Vim model (the executor's dispatch).
bool IsVimJob(const ExecutionRequest& request);

// Runs on the CPU (the engine's Vim quantization has no GPU path yet).
absl::StatusOr<ExecutionResult> RunVimQuantizeJob(const ExecutionRequest& request, const ExecutionProgressFn& progress);

}  // namespace mq::worker
