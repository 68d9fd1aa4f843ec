// The job state machine. Every persisted change of Job.state goes through CheckTransition.
//
//   QUEUED ──assign──▶ ASSIGNED ──first progress──▶ RUNNING
//     │  ▲                │  │                        │
//     │  └──worker lost───┴──┼────────────────────────┤   (requeue; FAILED after --max-attempts)
//     │                      ▼                        ▼
//     └──cancel──▶ CANCELLED   SUCCEEDED | FAILED | CANCELLED   (worker's FinishJob)
#pragma once

#include "absl/status/status.h"
#include "mambaquant/v1/common.pb.h"

namespace mq::server {

bool IsTerminal(mambaquant::v1::JobState state);
// ASSIGNED or RUNNING: a worker holds the job.
bool IsOnWorker(mambaquant::v1::JobState state);
// FAILED_PRECONDITION naming both states when `to` is not reachable from `from`.
absl::Status CheckTransition(mambaquant::v1::JobState from, mambaquant::v1::JobState to);
const char* JobStateName(mambaquant::v1::JobState state);  // "QUEUED", ...

}  // namespace mq::server
