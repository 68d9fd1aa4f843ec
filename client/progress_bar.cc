#include "progress_bar.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"
#include "cli_context.h"

namespace mq::cli {

std::string StageLabel(mambaquant::v1::Stage stage) {
  std::string name = mambaquant::v1::Stage_Name(stage);
  return name.rfind("STAGE_", 0) == 0 ? name.substr(6) : name;
}

std::string StateLabel(mambaquant::v1::JobState state) {
  std::string name = mambaquant::v1::JobState_Name(state);
  return name.rfind("JOB_STATE_", 0) == 0 ? name.substr(10) : name;
}

namespace {

std::string Eta(double seconds) {
  if (seconds < 0) return "ETA --";
  int s = static_cast<int>(std::lround(seconds));
  if (s >= 3600) return absl::StrFormat("ETA %dh%02dm", s / 3600, (s / 60) % 60);
  if (s >= 60) return absl::StrFormat("ETA %dm%02ds", s / 60, s % 60);
  return absl::StrFormat("ETA %ds", s);
}

}  // namespace

void JobProgressPrinter::Update(const mambaquant::v1::Job& job) {
  const double f = std::clamp(job.fraction(), 0.0, 1.0);
  if (interactive_) {
    constexpr int kWidth = 30;
    int filled = static_cast<int>(f * kWidth);
    std::string bar(filled, '#');
    bar.resize(kWidth, '.');
    std::string msg = job.message().substr(0, 40);
    std::fprintf(out_, "\r\033[K%s [%s] %3.0f%% %-9s %-10s %s  %s", job.id().c_str(), bar.c_str(), 100 * f,
                 StateLabel(job.state()).c_str(),
                 job.stage() == mambaquant::v1::STAGE_UNSPECIFIED ? "" : StageLabel(job.stage()).c_str(),
                 Eta(job.eta_seconds()).c_str(), msg.c_str());
    std::fflush(out_);
    drawn_ = true;
    return;
  }
  int decile = static_cast<int>(f * 10);
  if (job.state() == last_state_ && job.stage() == last_stage_ && decile == last_decile_) return;
  last_state_ = job.state();
  last_stage_ = job.stage();
  last_decile_ = decile;
  std::fprintf(out_, "%s %s stage=%s progress=%.0f%% %s message=\"%s\"\n", job.id().c_str(),
               StateLabel(job.state()).c_str(), StageLabel(job.stage()).c_str(), 100 * f,
               Eta(job.eta_seconds()).c_str(), job.message().c_str());
  std::fflush(out_);
}

void JobProgressPrinter::Done() {
  if (drawn_) std::fprintf(out_, "\n");
  drawn_ = false;
}

void TransferPrinter::Update(uint64_t done, uint64_t total) {
  if (!interactive_) return;
  int percent = total ? static_cast<int>(100.0 * static_cast<double>(done) / static_cast<double>(total)) : 100;
  if (percent == last_percent_) return;
  last_percent_ = percent;
  std::fprintf(stderr, "\r\033[K%s %3d%% %s / %s", label_.c_str(), percent, FormatBytes(done).c_str(),
               FormatBytes(total).c_str());
  drawn_ = true;
}

void TransferPrinter::Done() {
  if (drawn_) std::fprintf(stderr, "\n");
  drawn_ = false;
}

}  // namespace mq::cli
