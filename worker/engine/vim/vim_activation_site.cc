#include "vim/vim_activation_site.h"

namespace mq {

const char* VimSiteName(VimSite site) {
  switch (site) {
    case VimSite::kInProjInput: return "in_proj_input";
    case VimSite::kXProjInputForward: return "x_proj_input";
    case VimSite::kXProjInputBackward: return "x_proj_b_input";
    case VimSite::kDtProjInputForward: return "dt_proj_input";
    case VimSite::kDtProjInputBackward: return "dt_proj_b_input";
    case VimSite::kOutProjInput: return "out_proj_input";
    case VimSite::kSsmStateForward: return "ssm_state";
    case VimSite::kSsmStateBackward: return "ssm_state_b";
    case VimSite::kSsmCForward: return "ssm_c";
    case VimSite::kSsmCBackward: return "ssm_c_b";
    case VimSite::kHeadInput: return "head_input";
  }
  return "?";
}

}  // namespace mq
