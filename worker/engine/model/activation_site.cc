#include "model/activation_site.h"

namespace mq {

const char* ActivationSiteName(ActivationSite site) {
  switch (site) {
    case ActivationSite::kInProjInput: return "in_proj_input";
    case ActivationSite::kConvInput: return "conv_input";
    case ActivationSite::kXProjInput: return "x_proj_input";
    case ActivationSite::kDtProjInput: return "dt_proj_input";
    case ActivationSite::kOutProjInput: return "out_proj_input";
    case ActivationSite::kSsmState: return "ssm_state";
    case ActivationSite::kSsmC: return "ssm_c";
    case ActivationSite::kLayerOutput: return "layer_output";
    case ActivationSite::kFinalNorm: return "final_norm";
  }
  return "?";
}

}  // namespace mq
