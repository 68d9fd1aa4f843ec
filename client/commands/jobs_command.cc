// mqctl jobs ...: submit, get, list, cancel, watch.
#include <cstdio>
#include <thread>
#include <utility>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "commands.h"
#include "grpc_status.h"
#include "inference_flags.h"
#include "progress_bar.h"
#include "quant_spec_proto.h"
#include "terminal_text.h"

namespace mq::cli {

using namespace mambaquant::v1;  // NOLINT

namespace {

bool IsTerminal(JobState s) {
  return s == JOB_STATE_SUCCEEDED || s == JOB_STATE_FAILED || s == JOB_STATE_CANCELLED;
}

int ExitFor(const Job& job) { return job.state() == JOB_STATE_SUCCEEDED ? kExitOk : kExitJobFailed; }

void PrintJob(const Job& from_server) {
  const Job job = ForTerminal(from_server);  // no escape sequence or forged line reaches the terminal
  const auto& s = job.spec();
  std::printf("job          %s\n", job.id().c_str());
  std::printf("state        %s%s\n", StateLabel(job.state()).c_str(), job.cancel_requested() && !IsTerminal(job.state()) ? " (cancel requested)" : "");
  std::printf("model        %s\n", s.model().c_str());
  // A Vim job's calibration is whole images: no sequence length (the server stores none).
  const std::string samples = s.seq_len() > 0 ? absl::StrCat(s.num_samples(), " x ", s.seq_len())
                                               : absl::StrCat(s.num_samples(), " samples");
  std::printf("quantization %s %s scope %s, calib %s (%s, seed %llu)%s%s\n", s.preset().c_str(), s.bits().c_str(),
              s.scope().c_str(), s.calib_dataset().c_str(), samples.c_str(),
              static_cast<unsigned long long>(s.seed()), s.eval_dataset().empty() ? "" : ", eval ",
              s.eval_dataset().c_str());
  if (!s.backend().empty()) std::printf("backend      %s\n", s.backend().c_str());
  if (job.state() == JOB_STATE_QUEUED && !job.message().empty()) std::printf("waiting      %s\n", job.message().c_str());
  if (job.state() == JOB_STATE_RUNNING || job.state() == JOB_STATE_ASSIGNED) {
    std::printf("progress     %.0f%% (%s %.0f%%), ETA %.0fs: %s\n", 100 * job.fraction(), StageLabel(job.stage()).c_str(),
                100 * job.stage_fraction(), job.eta_seconds(), job.message().c_str());
  }
  if (!job.worker_id().empty()) std::printf("worker       %s (attempt %d)\n", job.worker_id().c_str(), job.attempt());
  if (!job.result_model().empty()) std::printf("result       %s\n", job.result_model().c_str());
  if (!job.error().empty()) std::printf("error        %s\n", job.error().c_str());
  std::printf("created      %s\n", FormatTime(job.create_time().seconds()).c_str());
  if (job.has_finish_time()) std::printf("finished     %s\n", FormatTime(job.finish_time().seconds()).c_str());
}

// Follows a job to its end, reconnecting across server restarts. Returns the final job.
absl::StatusOr<Job> Follow(CliContext& cli, const std::string& job_id, bool show_progress) {
  JobProgressPrinter printer(stdout, cli.stdout_is_tty && !cli.json);
  absl::Duration backoff = absl::Milliseconds(250);
  Job last;
  for (;;) {
    grpc::ClientContext ctx;
    cli.Prepare(&ctx, false);
    WatchJobRequest req;
    req.set_job_id(job_id);
    auto reader = cli.jobs->WatchJob(&ctx, req);
    JobEvent event;
    while (reader->Read(&event)) {
      last = event.job();
      backoff = absl::Milliseconds(250);
      if (show_progress) printer.Update(ForTerminal(last));
    }
    absl::Status s = FromGrpcStatus(reader->Finish());
    if (IsTerminal(last.state())) {
      if (show_progress) printer.Done();
      return last;
    }
    if (!s.ok() && s.code() != absl::StatusCode::kUnavailable && s.code() != absl::StatusCode::kDeadlineExceeded) {
      if (show_progress) printer.Done();
      return s;
    }
    // The server restarted or is draining: the job is durable, so watch again.
    absl::SleepFor(backoff);
    backoff = std::min(backoff * 2, absl::Seconds(2));
  }
}

int Submit(CliContext& cli, const Args& args) {
  QuantSpec spec;
  auto model = args.Require("model");
  auto calib = args.Require("calib");
  // Sizes are only parsed here (0: the default); their limits are the job spec's, checked below.
  auto samples = args.GetInt("samples", 0, INT32_MIN, INT32_MAX);
  auto seq_len = args.GetInt("seq-len", 0, INT32_MIN, INT32_MAX);
  auto seed = args.GetInt("seed", 0, 0, INT64_MAX);
  auto window = args.GetInt("eval-window", 0, INT32_MIN, INT32_MAX);
  for (const absl::Status& s : {model.status(), calib.status(), samples.status(), seq_len.status(), seed.status(), window.status()}) {
    if (!s.ok()) return ReportError(s);
  }
  // 0 in the spec means "the default"; a user who typed 0 asked for something else.
  const std::pair<const char*, int64_t> sizes[] = {{"samples", *samples}, {"seq-len", *seq_len}, {"eval-window", *window}};
  for (const auto& [flag, value] : sizes) {
    if (args.Has(flag) && value == 0)
      return CommandUsageError("jobs", std::string("--") + flag + " must be at least 1 (omit it for the default)");
  }
  spec.set_model(*model);
  spec.set_calib_dataset(*calib);
  spec.set_preset(args.GetOr("preset", ""));
  spec.set_bits(args.GetOr("bits", ""));
  spec.set_scope(args.GetOr("scope", ""));
  spec.set_act_granularity(args.GetOr("act", ""));
  spec.set_num_samples(static_cast<int32_t>(*samples));
  spec.set_seq_len(static_cast<int32_t>(*seq_len));
  spec.set_seed(static_cast<uint64_t>(*seed));
  spec.set_eval_dataset(args.GetOr("eval", ""));
  spec.set_eval_window(static_cast<int32_t>(*window));
  spec.set_output_name(args.GetOr("output-name", ""));
  spec.set_backend(args.GetOr("backend", ""));
  spec.set_r1_covariance(args.GetOr("r1-covariance", ""));
  spec.set_weight_clip(args.GetOr("weight-clip", ""));
  spec.set_state_granularity(args.GetOr("state-granularity", ""));
  if (args.Has("quantize-lm-head")) spec.set_quantize_lm_head(true);
  if (auto p = args.Get("act-percentile")) {
    double v = 0;
    if (!absl::SimpleAtod(*p, &v)) return UsageError("--act-percentile takes a number");
    spec.set_act_percentile(v);
  }
  if (auto p = args.Get("smooth-alpha")) {
    double v = 0;
    if (!absl::SimpleAtod(*p, &v)) return UsageError("--smooth-alpha takes a number");
    spec.set_smooth_alpha(v);
  }
  if (auto p = args.Get("tolerable-loss")) {
    double v = 0;
    if (!absl::SimpleAtod(*p, &v)) return UsageError("--tolerable-loss takes a number (percent)");
    spec.set_tolerable_loss_percent(v);
  }
  if (auto p = args.Get("w8-layers")) {
    auto layers = quant::ParseLayerList(*p);
    if (!layers.ok()) return UsageError(std::string("--w8-layers: ") + layers.status().message());
    for (int l : *layers) spec.add_w8_layers(static_cast<uint32_t>(l));
  }
  for (const std::string& off : args.GetAll("disable")) {
    if (off == "klt_r1") spec.set_klt_r1(false);
    else if (off == "klt_r5") spec.set_klt_r5(false);
    else if (off == "online_r2") spec.set_online_r2(false);
    else if (off == "smooth_s2") spec.set_smooth_s2(false);
    else if (off == "smooth_s4") spec.set_smooth_s4(false);
    else return UsageError("--disable takes klt_r1, klt_r5, online_r2, smooth_s2 or smooth_s4");
  }
  // The server runs this same check (common/quant_spec_proto.h): a bad spec fails here, offline,
  // with the message the server would send.
  if (auto options = QuantizeOptionsFromProto(spec); !options.ok()) return ReportError(options.status());
  if (absl::Status s = CheckSubmittedQuantSpec(spec); !s.ok()) return ReportError(s);
  SubmitJobRequest req;
  *req.mutable_spec() = spec;
  Job job;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.jobs->SubmitJob(&ctx, req, &job));
  if (!s.ok()) return ReportError(s);
  if (!args.Has("wait")) {
    if (cli.json) {
      cli.PrintJson(job);
    } else {
      std::printf("submitted %s\n", job.id().c_str());
    }
    return kExitOk;
  }
  if (!cli.json) std::printf("submitted %s\n", job.id().c_str());
  auto final_job = Follow(cli, job.id(), !cli.json);
  if (!final_job.ok()) return ReportError(final_job.status());
  if (cli.json) {
    cli.PrintJson(*final_job);
  } else {
    final_job = ForTerminal(*final_job);
    std::printf("%s %s%s%s\n", final_job->id().c_str(), StateLabel(final_job->state()).c_str(),
                final_job->result_model().empty() ? "" : absl::StrCat(": ", final_job->result_model()).c_str(),
                final_job->error().empty() ? "" : absl::StrCat(": ", final_job->error()).c_str());
  }
  return ExitFor(*final_job);
}

int GetJob(CliContext& cli, const std::string& id) {
  GetJobRequest req;
  req.set_job_id(id);
  Job job;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.jobs->GetJob(&ctx, req, &job));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(job);
  } else {
    PrintJob(job);
  }
  return kExitOk;
}

int ListJobs(CliContext& cli, const Args& args) {
  ListJobsRequest req;
  for (const std::string& st : args.GetAll("state")) {
    for (absl::string_view one : absl::StrSplit(st, ',')) {
      JobState state;
      std::string name = absl::StrCat("JOB_STATE_", one);
      for (char& c : name) c = static_cast<char>(toupper(static_cast<unsigned char>(c)));
      if (!JobState_Parse(name, &state) || state == JOB_STATE_UNSPECIFIED) {
        return UsageError("--state takes queued, assigned, running, succeeded, failed, cancelled");
      }
      req.add_states(state);
    }
  }
  auto limit = args.GetInt("limit", 100, 1, 1000);
  if (!limit.ok()) return ReportError(limit.status());
  req.set_page_size(static_cast<int32_t>(*limit));
  req.set_model_name(args.GetOr("model", ""));
  req.set_page_token(args.GetOr("page-token", ""));
  ListJobsResponse resp;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.jobs->ListJobs(&ctx, req, &resp));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(resp);
    return kExitOk;
  }
  std::printf("%-20s %-10s %-26s %-18s %5s  %s\n", "JOB", "STATE", "MODEL", "PRESET", "DONE", "RESULT / ERROR");
  for (const auto& from_server : resp.jobs()) {
    const Job j = ForTerminal(from_server);
    std::printf("%-20s %-10s %-26s %-18s %4.0f%%  %s\n", j.id().c_str(), StateLabel(j.state()).c_str(),
                j.spec().model().c_str(), absl::StrCat(j.spec().preset(), " ", j.spec().bits()).c_str(),
                100 * j.fraction(), (j.result_model().empty() ? j.error() : j.result_model()).substr(0, 60).c_str());
  }
  if (!resp.next_page_token().empty()) std::printf("more: --page-token %s\n", SanitizeTerminalText(resp.next_page_token(), false).c_str());
  return kExitOk;
}

int Cancel(CliContext& cli, const std::string& id) {
  CancelJobRequest req;
  req.set_job_id(id);
  Job job;
  grpc::ClientContext ctx;
  cli.Prepare(&ctx);
  absl::Status s = FromGrpcStatus(cli.jobs->CancelJob(&ctx, req, &job));
  if (!s.ok()) return ReportError(s);
  if (cli.json) {
    cli.PrintJson(job);
  } else {
    std::printf("%s %s\n", job.id().c_str(),
                job.state() == JOB_STATE_CANCELLED ? "cancelled" : "cancel requested; the worker is stopping it");
  }
  return kExitOk;
}

int Watch(CliContext& cli, const std::string& id) {
  if (cli.json) {
    // One JSON line per event, for scripts.
    for (;;) {
      grpc::ClientContext ctx;
      cli.Prepare(&ctx, false);
      WatchJobRequest req;
      req.set_job_id(id);
      auto reader = cli.jobs->WatchJob(&ctx, req);
      JobEvent event;
      Job last;
      while (reader->Read(&event)) {
        last = event.job();
        cli.PrintJson(event);
      }
      absl::Status s = FromGrpcStatus(reader->Finish());
      if (IsTerminal(last.state())) return ExitFor(last);
      if (!s.ok() && s.code() != absl::StatusCode::kUnavailable) return ReportError(s);
      absl::SleepFor(absl::Seconds(1));
    }
  }
  auto job = Follow(cli, id, true);
  if (!job.ok()) return ReportError(job.status());
  job = ForTerminal(*job);
  std::printf("%s %s%s%s\n", job->id().c_str(), StateLabel(job->state()).c_str(),
              job->result_model().empty() ? "" : absl::StrCat(": ", job->result_model()).c_str(),
              job->error().empty() ? "" : absl::StrCat(": ", job->error()).c_str());
  return ExitFor(*job);
}

}  // namespace

int RunJobsCommand(CliContext& cli, const Args& args, const std::vector<std::string>& words) {
  if (words.empty()) return UsageError("jobs needs a subcommand: submit, get, list, cancel, watch");
  const std::string& verb = words[0];
  auto allow = [&](std::set<std::string> extra) {
    extra.insert(GlobalOptions().begin(), GlobalOptions().end());
    return args.AllowOnly(extra);
  };
  absl::Status allowed;
  if (verb == "submit") {
    allowed = allow({"model", "preset", "bits", "scope", "act", "calib", "samples", "seq-len", "seed", "eval",
                     "eval-window", "output-name", "backend", "disable", "wait", "act-percentile",
                     "smooth-alpha", "quantize-lm-head", "r1-covariance", "weight-clip", "state-granularity", "tolerable-loss",
                     "w8-layers"});
    if (!allowed.ok()) return ReportError(allowed);
    if (words.size() != 1) return UsageError("jobs submit takes options only");
    return Submit(cli, args);
  }
  if (verb == "list") {
    allowed = allow({"state", "model", "limit", "page-token"});
    if (!allowed.ok()) return ReportError(allowed);
    if (words.size() != 1) return UsageError("jobs list takes options only");
    return ListJobs(cli, args);
  }
  if (verb == "get" || verb == "cancel" || verb == "watch") {
    allowed = allow({});
    if (!allowed.ok()) return ReportError(allowed);
    if (words.size() != 2) return UsageError(absl::StrCat("jobs ", verb, " takes a job id"));
    if (verb == "get") return GetJob(cli, words[1]);
    if (verb == "cancel") return Cancel(cli, words[1]);
    return Watch(cli, words[1]);
  }
  return UsageError(absl::StrCat("unknown jobs subcommand \"", verb, "\""));
}

}  // namespace mq::cli
