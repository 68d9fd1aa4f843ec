// Lets absl flags be spelled with dashes on the command line ("--data-dir" for FLAGS_data_dir),
// the project's documented style; underscores keep working.
#pragma once

#include <string>
#include <vector>

namespace mq {

// Copies argv with '-' turned into '_' inside option names (never in values or positionals).
class DashedFlagArgs {
 public:
  DashedFlagArgs(int argc, char** argv);
  int argc() const { return static_cast<int>(ptrs_.size()) - 1; }
  char** argv() { return ptrs_.data(); }

 private:
  std::vector<std::string> storage_;
  std::vector<char*> ptrs_;
};

}  // namespace mq
