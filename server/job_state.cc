#include "job_state.h"

#include "absl/strings/str_cat.h"

namespace mq::server {

using mambaquant::v1::JobState;

bool IsTerminal(JobState state) {
  return state == JobState::JOB_STATE_SUCCEEDED || state == JobState::JOB_STATE_FAILED ||
         state == JobState::JOB_STATE_CANCELLED;
}

bool IsOnWorker(JobState state) {
  return state == JobState::JOB_STATE_ASSIGNED || state == JobState::JOB_STATE_RUNNING;
}

const char* JobStateName(JobState state) {
  switch (state) {
    case JobState::JOB_STATE_QUEUED: return "QUEUED";
    case JobState::JOB_STATE_ASSIGNED: return "ASSIGNED";
    case JobState::JOB_STATE_RUNNING: return "RUNNING";
    case JobState::JOB_STATE_SUCCEEDED: return "SUCCEEDED";
    case JobState::JOB_STATE_FAILED: return "FAILED";
    case JobState::JOB_STATE_CANCELLED: return "CANCELLED";
    default: return "UNSPECIFIED";
  }
}

absl::Status CheckTransition(JobState from, JobState to) {
  bool allowed = false;
  switch (from) {
    case JobState::JOB_STATE_QUEUED:
      allowed = to == JobState::JOB_STATE_ASSIGNED || to == JobState::JOB_STATE_CANCELLED;
      break;
    case JobState::JOB_STATE_ASSIGNED:
    case JobState::JOB_STATE_RUNNING:
      allowed = to == JobState::JOB_STATE_RUNNING || to == JobState::JOB_STATE_QUEUED || IsTerminal(to);
      break;
    default:
      allowed = false;
  }
  if (!allowed) {
    return absl::FailedPreconditionError(
        absl::StrCat("job is ", JobStateName(from), "; cannot become ", JobStateName(to)));
  }
  return absl::OkStatus();
}

}  // namespace mq::server
