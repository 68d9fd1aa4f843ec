// Accuracy-driven quantization (the job option tolerable_loss_percent): like Intel Neural
// Compressor's tolerable-loss tuning, for Mamba. The tail of the calibration text is held out
// (never eval text). Configurations come in tiers of inference cost, cheapest first: rtn with
// static per-tensor activations; rtn per token; quarot or mambaquant with static activations (both
// run an online R2 Hadamard); quarot or mambaquant per token, with mambaquant's alternatives of
// the same cost (plain-Hadamard R5, the other weight clipping, no S5, smoothing α 0.3 / 0.7).
// Every configuration of a tier is scored; the first tier with one within the budget gives the
// kept configuration: the lowest held-out loss among its configurations within the budget (so a
// budget that quarot meets still gets mambaquant when it is better at the same cost). A w4a8 job
// that no tier satisfies then tries mixed precision on the lowest-loss configuration: each layer
// alone at 8-bit weights (its sensitivity), then the k most sensitive together for k = 1, 2, ...;
// the first k within the budget is kept (fewest 8-bit layers: cheapest). When nothing meets the
// budget, the lowest-loss configuration of all is kept and the report says so.
#pragma once

#include <nlohmann/json.hpp>

#include "quant/quant_accelerator.h"
#include "quant/quantize_pipeline.h"
#include "util/status.h"

namespace mq::quant {

struct TuningOutcome {
  QuantizeOptions chosen;  // tolerable_loss_percent cleared; calib_holdout_fraction as tuned
  // {"tolerable_loss_percent", "holdout_fraction", "met", "chosen", "w8_layers", "why",
  //  "mixed_precision": null | {"on", "sensitivity_order"},
  //  "trials": [{"name", "tier", "preset", "activations", "options", "holdout_perplexity",
  //              "float_perplexity", "loss_percent", "within_budget", "seconds"} | {"name", "skipped"}
  //             | {"name", "tier", "phase", "w8_layers", ... as above}]}
  nlohmann::json report;
};

// One configuration to try; tier = its inference-cost rank (0 cheapest), non-decreasing in the
// candidate list.
struct TuningCandidate {
  std::string name;
  QuantizeOptions options;
  int tier = 0;
};
// The candidate list for `base` (its bits and scope), in trial order.
std::vector<TuningCandidate> TuningCandidates(const QuantizeOptions& base);

StatusOr<TuningOutcome> TuneForTolerableLoss(const QuantizeOptions& base, QuantAccelerator& accel,
                                             const ProgressCallback& progress);

}  // namespace mq::quant
