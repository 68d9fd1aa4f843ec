// The one conversion of a job's QuantSpec message into the engine's job options
// (quant::QuantizeOptions), checked by the engine's own job-spec check (quant/job_spec.h). mq-server
// runs it at submission, mq-worker to build the job it runs and mqctl before it sends one: the
// same defaults, names, limits and messages everywhere, so a spec the server accepts is one the
// engine runs. References (model, datasets) and the output name are the server's to check.
#pragma once

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "mambaquant/v1/common.pb.h"
#include "quant/job_spec.h"
#include "quant/quantize_pipeline.h"

namespace mq {

// Unset fields (empty strings, zero sizes, absent optionals) keep QuantizeOptions' defaults; paths
// are left empty (the worker fills them). INVALID_ARGUMENT names the field ("spec.seq_len must be
// in [2, 65536]; got 1"): the engine's check, plus what only the message can get wrong (an unknown
// r1_covariance or backend name; a requested tolerable_loss_percent outside (0, 100], 0 included).
// `model`: what the job quantizes, when known (the server knows it once the model reference is
// resolved; the worker from the model's config.json).
absl::StatusOr<quant::QuantizeOptions> QuantizeOptionsFromProto(const mambaquant::v1::QuantSpec& spec,
                                                                quant::JobModel model = quant::JobModel::kText);

// What a submitted spec asks that the job would silently not do: a field that applies to another
// scope (state_granularity outside scope full). Checked on the client's spec as submitted (the
// server before it fills defaults, mqctl before sending), not on stored specs.
absl::Status CheckSubmittedQuantSpec(const mambaquant::v1::QuantSpec& spec);
// The same for the fields a Vim job does not use (smooth_alpha, quantize_lm_head, seq_len,
// eval_window: text-model settings), once the server knows what the model is. `spec` as submitted.
absl::Status CheckSubmittedQuantSpecForModel(const mambaquant::v1::QuantSpec& spec, quant::JobModel model);

// Writes the engine's defaults into the unset choice and size fields, so that a stored job shows
// what runs. Optional switches stay unset (unset means the engine's default).
void FillQuantSpecDefaults(mambaquant::v1::QuantSpec* spec);

}  // namespace mq
