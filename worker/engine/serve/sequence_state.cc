#include "serve/sequence_state.h"

namespace mq::serve {

const char* SequenceStateName(SequenceState s) {
  switch (s) {
    case SequenceState::kWaiting: return "waiting";
    case SequenceState::kPrefilling: return "prefilling";
    case SequenceState::kDecoding: return "decoding";
    case SequenceState::kFinished: return "finished";
    case SequenceState::kCancelled: return "cancelled";
    case SequenceState::kFailed: return "failed";
  }
  return "unknown";
}

}  // namespace mq::serve
