// The quantized-model loader on an arbitrary config.json (its quantization metadata above all):
// every malformed or ill-typed field is a Status, never an exception, a crash or undefined
// behaviour. The directory holds no weights, so an accepted config ends at NOT_FOUND for them.
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <string>

#include "fuzz_check.h"
#include "model/model_loader.h"

namespace {

const std::string& ModelDir() {
  static const std::string dir = [] {
    const auto d = std::filesystem::temp_directory_path() / ("mq_fuzz_qmodel_" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d.string();
  }();
  return dir;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  {
    std::ofstream out(ModelDir() + "/config.json", std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  }
  auto model = mq::LoadModel(ModelDir());
  MQ_FUZZ_CHECK(!model.ok());  // no weights in the directory
  MQ_FUZZ_CHECK(!model.status().message().empty());
  return 0;
}
