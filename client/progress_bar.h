// Job progress on a terminal: one line redrawn in place ("\r"). Elsewhere (pipes, CI logs) a plain
// line is printed whenever the state or stage changes, or progress moves by 10%.
#pragma once

#include <cstdio>
#include <string>

#include "mambaquant/v1/common.pb.h"

namespace mq::cli {

class JobProgressPrinter {
 public:
  JobProgressPrinter(FILE* out, bool interactive) : out_(out), interactive_(interactive) {}
  void Update(const mambaquant::v1::Job& job);
  // Ends the redrawn line.
  void Done();

 private:
  FILE* out_;
  bool interactive_;
  bool drawn_ = false;
  int last_state_ = -1;
  int last_stage_ = -1;
  int last_decile_ = -1;
};

// Byte transfer progress on stderr when it is a terminal.
class TransferPrinter {
 public:
  TransferPrinter(const std::string& label, bool interactive) : label_(label), interactive_(interactive) {}
  void Update(uint64_t done, uint64_t total);
  void Done();

 private:
  std::string label_;
  bool interactive_;
  bool drawn_ = false;
  int last_percent_ = -1;
};

std::string StageLabel(mambaquant::v1::Stage stage);
std::string StateLabel(mambaquant::v1::JobState state);

}  // namespace mq::cli
