// Function-preserving outlier variants of a float Mamba-1 model: chosen channels are scaled up by
// large factors at a site whose next operation is linear in that channel, and the next weight is
// divided by the same factors, so the float model computes the same function while the
// activations (and some weights) the quantizer sees carry outliers like a large LLM's.
//
// The sites that can be exact in the Hugging Face Mamba format (docs/quantization.md, "Outlier
// variants", says why the others cannot):
//   norm  — RMSNorm γ_j ×c, in_proj column j ÷c (the normalized residual x̂ entering in_proj).
//           The channels are the same in every layer, as residual outliers are in LLMs.
//   conv  — in_proj x-half row j ×c, conv1d weight row j ÷c (the conv input u0; depthwise conv,
//           its bias is unchanged).
//   dt    — x_proj δ row j ×c, dt_proj column j ÷c (the low-rank δ entering dt_proj).
//   state — x_proj B row n ×c, C row n ÷c (h_n scales by c since A is diagonal; y = h·C is unchanged).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "model/mamba_weights.h"
#include "util/status.h"

namespace mq {

enum class OutlierSite { kNorm, kConv, kDt, kState };
const char* OutlierSiteName(OutlierSite site);

struct OutlierSpec {
  struct Entry {
    OutlierSite site;
    int64_t channels;  // per layer, in [1, 64] and at most the site's width
    double factor;     // in [1, 1e4]
  };
  std::vector<Entry> entries;
  uint64_t seed = 0;  // which channels (std::mt19937_64, portable)

  // "site:COUNTxFACTOR,…", e.g. "norm:2x60,conv:2x40,dt:1x50,state:2x30"; "default" is
  // kDefaultOutliers. Each site at most once.
  static StatusOr<OutlierSpec> Parse(const std::string& text, uint64_t seed);
  std::string ToString() const;
};

// The variant used by the quality table and the tests: a few channels ×30–×60 at each exact site.
inline constexpr const char* kDefaultOutliers = "norm:2x60,conv:2x40,dt:1x50,state:2x30";

// Scales and compensates `w` in place (float weights only); returns what was done, per layer and
// site: {"spec", "layers": [{"layer", "site", "channels": [...], "factor"}]}.
StatusOr<nlohmann::json> ApplyOutliers(MambaWeights& w, const OutlierSpec& spec);

}  // namespace mq
