#include "flag_names.h"

namespace mq {

DashedFlagArgs::DashedFlagArgs(int argc, char** argv) {
  storage_.reserve(static_cast<size_t>(argc));
  bool positional_only = false;
  for (int i = 0; i < argc; ++i) {
    std::string a = argv[i];
    if (i > 0 && !positional_only && a == "--") positional_only = true;
    if (i > 0 && !positional_only && a.size() > 2 && a[0] == '-') {
      size_t start = a[1] == '-' ? 2 : 1;
      size_t end = a.find('=');
      if (end == std::string::npos) end = a.size();
      for (size_t j = start; j < end; ++j) {
        if (a[j] == '-') a[j] = '_';
      }
    }
    storage_.push_back(std::move(a));
  }
  for (auto& s : storage_) ptrs_.push_back(s.data());
  ptrs_.push_back(nullptr);
}

}  // namespace mq
