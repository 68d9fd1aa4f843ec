// The life of a sequence in the serving loop, and the one place its transitions are defined:
//
//   kWaiting ──▶ kPrefilling ──▶ kDecoding ──▶ kFinished
//       │             │  └───────────────────────▲ (Score)
//       │             │              │
//       └─────────────┴──────────────┴──▶ kCancelled | kFailed
//
// kWaiting: queued, holds no state slot. kPrefilling: holds a slot, its prompt is being run in
// chunks (completions 1..n−1 of a call skip it: their slot receives a copy of completion 0's
// state). kDecoding: in every decode step. The three ends release the slot. A Score call is a
// prefill only: it goes from kPrefilling to kFinished.
#pragma once

#include <cstdint>

namespace mq::serve {

enum class SequenceState : uint8_t { kWaiting, kPrefilling, kDecoding, kFinished, kCancelled, kFailed };

constexpr bool IsTerminal(SequenceState s) {
  return s == SequenceState::kFinished || s == SequenceState::kCancelled || s == SequenceState::kFailed;
}

constexpr bool HoldsSlot(SequenceState s) {
  return s == SequenceState::kPrefilling || s == SequenceState::kDecoding;
}

constexpr bool CanTransition(SequenceState from, SequenceState to) {
  switch (from) {
    case SequenceState::kWaiting:
      return to == SequenceState::kPrefilling || to == SequenceState::kDecoding || to == SequenceState::kCancelled ||
             to == SequenceState::kFailed;
    case SequenceState::kPrefilling:
      return to == SequenceState::kDecoding || to == SequenceState::kFinished || to == SequenceState::kCancelled ||
             to == SequenceState::kFailed;
    case SequenceState::kDecoding:
      return to == SequenceState::kFinished || to == SequenceState::kCancelled || to == SequenceState::kFailed;
    default:
      return false;  // terminal states are final
  }
}

const char* SequenceStateName(SequenceState s);

}  // namespace mq::serve
