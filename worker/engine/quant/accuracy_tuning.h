// Accuracy-driven quantization (the job option tolerable_loss_percent): like Intel Neural
// Compressor's tolerable-loss tuning, for Mamba. The tail of the calibration text is held out
// (never eval text); configurations are tried cheapest first at inference (static per-tensor
// activations before per-token, rtn before quarot's online R2 before mambaquant's R2 + S-SiLU,
// then mambaquant's alternatives of the same cost: plain-Hadamard R5, the other weight clipping,
// no S5) and the first whose held-out perplexity change is within the budget is kept; when none
// is, the lowest-loss one is kept and the report says the budget was not met.
//
// Not tried: keeping layers in higher precision (the export holds one weight width per model)
// and other smoothing α (one α per job today).
#pragma once

#include <nlohmann/json.hpp>

#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"

namespace mq::quant {

struct TuningOutcome {
  QuantizeOptions chosen;  // tolerable_loss_percent cleared; calib_holdout_fraction as tuned
  // {"tolerable_loss_percent", "holdout_fraction", "holdout_tokens", "met", "chosen", "why",
  //  "trials": [{"name", "preset", "activations", "options", "holdout_perplexity",
  //              "float_perplexity", "loss_percent", "within_budget", "seconds"} | {"name", "skipped"}]}
  nlohmann::json report;
};

// The candidate list for `base` (its bits and scope), in trial order.
std::vector<std::pair<std::string, QuantizeOptions>> TuningCandidates(const QuantizeOptions& base);

StatusOr<TuningOutcome> TuneForTolerableLoss(const QuantizeOptions& base, QuantAccelerator& accel,
                                             const ProgressCallback& progress);

}  // namespace mq::quant
