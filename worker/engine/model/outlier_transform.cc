#include "model/outlier_transform.h"

#include <algorithm>
#include <random>
#include <set>
#include <sstream>

namespace mq {
namespace {

StatusOr<OutlierSite> ParseSite(const std::string& s) {
  if (s == "norm") return OutlierSite::kNorm;
  if (s == "conv") return OutlierSite::kConv;
  if (s == "dt") return OutlierSite::kDt;
  if (s == "state") return OutlierSite::kState;
  return InvalidArgumentError("outlier site \"" + s + "\" is not one of norm, conv, dt, state");
}

// `count` distinct channels of [0, width): a partial Fisher–Yates shuffle driven by raw
// mt19937_64 output modulo the range (portable across standard libraries), sorted.
std::vector<int64_t> PickChannels(std::mt19937_64& rng, int64_t width, int64_t count) {
  std::vector<int64_t> all(static_cast<size_t>(width));
  for (int64_t i = 0; i < width; ++i) all[i] = i;
  for (int64_t i = 0; i < count; ++i) {
    const int64_t j = i + static_cast<int64_t>(rng() % static_cast<uint64_t>(width - i));
    std::swap(all[i], all[j]);
  }
  std::vector<int64_t> picked(all.begin(), all.begin() + count);
  std::sort(picked.begin(), picked.end());
  return picked;
}

void ScaleRow(std::vector<float>& m, int64_t cols, int64_t row, double c) {
  for (int64_t k = 0; k < cols; ++k) m[row * cols + k] = static_cast<float>(m[row * cols + k] * c);
}
void ScaleColumn(std::vector<float>& m, int64_t rows, int64_t cols, int64_t col, double c) {
  for (int64_t r = 0; r < rows; ++r) m[r * cols + col] = static_cast<float>(m[r * cols + col] * c);
}

int64_t SiteWidth(const MambaWeights& w, OutlierSite site) {
  switch (site) {
    case OutlierSite::kNorm: return w.d();
    case OutlierSite::kConv: return w.E();
    case OutlierSite::kDt: return w.R();
    case OutlierSite::kState: return w.N();
  }
  return 0;
}

}  // namespace

const char* OutlierSiteName(OutlierSite site) {
  switch (site) {
    case OutlierSite::kNorm: return "norm";
    case OutlierSite::kConv: return "conv";
    case OutlierSite::kDt: return "dt";
    case OutlierSite::kState: return "state";
  }
  return "?";
}

StatusOr<OutlierSpec> OutlierSpec::Parse(const std::string& text, uint64_t seed) {
  OutlierSpec spec;
  spec.seed = seed;
  const std::string body = text == "default" ? std::string(kDefaultOutliers) : text;
  if (body.empty()) return InvalidArgumentError("--outliers is empty (e.g. \"" + std::string(kDefaultOutliers) + "\")");
  std::set<OutlierSite> seen;
  std::stringstream ss(body);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const size_t colon = item.find(':'), x = item.find('x', colon == std::string::npos ? 0 : colon);
    if (colon == std::string::npos || x == std::string::npos)
      return InvalidArgumentError("outlier entry \"" + item + "\" is not SITE:COUNTxFACTOR");
    MQ_ASSIGN_OR_RETURN(OutlierSite site, ParseSite(item.substr(0, colon)));
    if (!seen.insert(site).second) return InvalidArgumentError("outlier site \"" + item.substr(0, colon) + "\" given twice");
    Entry e{site, 0, 0.0};
    try {
      size_t used = 0;
      const std::string count = item.substr(colon + 1, x - colon - 1), factor = item.substr(x + 1);
      e.channels = std::stoll(count, &used);
      if (used != count.size()) throw std::invalid_argument(count);
      e.factor = std::stod(factor, &used);
      if (used != factor.size()) throw std::invalid_argument(factor);
    } catch (const std::exception&) {
      return InvalidArgumentError("outlier entry \"" + item + "\": COUNT and FACTOR must be numbers");
    }
    if (e.channels < 1 || e.channels > 64) return InvalidArgumentError("outlier entry \"" + item + "\": COUNT must be in [1, 64]");
    if (!(e.factor >= 1.0 && e.factor <= 1e4)) return InvalidArgumentError("outlier entry \"" + item + "\": FACTOR must be in [1, 10000]");
    spec.entries.push_back(e);
  }
  return spec;
}

std::string OutlierSpec::ToString() const {
  std::ostringstream os;
  for (size_t i = 0; i < entries.size(); ++i)
    os << (i ? "," : "") << OutlierSiteName(entries[i].site) << ":" << entries[i].channels << "x" << entries[i].factor;
  return os.str();
}

StatusOr<nlohmann::json> ApplyOutliers(MambaWeights& w, const OutlierSpec& spec) {
  const int64_t d = w.d(), E = w.E(), N = w.N(), R = w.R(), K = w.K();
  for (const OutlierSpec::Entry& e : spec.entries)
    if (e.channels > SiteWidth(w, e.site))
      return InvalidArgumentError(std::string("outlier site ") + OutlierSiteName(e.site) + ": " +
                                  std::to_string(e.channels) + " channels, the model has " +
                                  std::to_string(SiteWidth(w, e.site)));
  for (const MambaLayerWeights& L : w.layers)
    if (L.in_proj.quant || L.x_proj.quant || L.dt_proj.quant)
      return FailedPreconditionError("outlier variants are made from float models");
  std::mt19937_64 rng(spec.seed);
  nlohmann::json applied = nlohmann::json::array();
  // Residual outliers sit in the same channels in every layer; the others differ per layer.
  std::vector<int64_t> norm_channels;
  for (const OutlierSpec::Entry& e : spec.entries)
    if (e.site == OutlierSite::kNorm) norm_channels = PickChannels(rng, d, e.channels);
  for (size_t li = 0; li < w.layers.size(); ++li) {
    MambaLayerWeights& L = w.layers[li];
    for (const OutlierSpec::Entry& e : spec.entries) {
      const double c = e.factor;
      std::vector<int64_t> ch =
          e.site == OutlierSite::kNorm ? norm_channels : PickChannels(rng, SiteWidth(w, e.site), e.channels);
      for (int64_t j : ch) {
        switch (e.site) {
          case OutlierSite::kNorm:  // x̂_j = x_j/rms · γ_j feeds only in_proj
            L.norm[j] = static_cast<float>(L.norm[j] * c);
            ScaleColumn(L.in_proj.weight, 2 * E, d, j, 1.0 / c);
            break;
          case OutlierSite::kConv:  // conv is depthwise: channel j's output is linear in u0_j plus a bias
            ScaleRow(L.in_proj.weight, d, j, c);
            if (!L.in_proj.bias.empty()) L.in_proj.bias[j] = static_cast<float>(L.in_proj.bias[j] * c);
            ScaleRow(L.conv_weight, K, j, 1.0 / c);
            break;
          case OutlierSite::kDt:  // δ_j feeds only dt_proj
            ScaleRow(L.x_proj.weight, E, j, c);
            ScaleColumn(L.dt_proj.weight, E, R, j, 1.0 / c);
            break;
          case OutlierSite::kState:  // h_n ∝ B_n (A diagonal), y = Σ_n h_n C_n
            ScaleRow(L.x_proj.weight, E, R + j, c);
            ScaleRow(L.x_proj.weight, E, R + N + j, 1.0 / c);
            break;
        }
      }
      applied.push_back({{"layer", li}, {"site", OutlierSiteName(e.site)}, {"channels", ch}, {"factor", c}});
    }
  }
  return nlohmann::json{{"spec", spec.ToString()}, {"seed", spec.seed}, {"layers", applied}};
}

}  // namespace mq
