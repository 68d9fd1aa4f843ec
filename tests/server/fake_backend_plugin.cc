// Fake backend plugins for backend_plugin_test, from one source:
//   default:              a table of another ABI version (the loader must refuse it);
//   MQ_FAKE_PLUGIN_GPU=1: a "GPU" whose probe always succeeds ("Fake GPU", 1 GiB) and whose
//                         quantization accelerator is the CPU reference renamed "cuda (fake GPU)";
//                         it declines jobs with static activation scales (as the real GPU does),
//                         so a worker loading it shows where each job's device comes from.
#include "serve/backend_plugin.h"

#if MQ_FAKE_PLUGIN_GPU
#include <memory>
#include <string>

#include "quant/cpu_quant_accelerator.h"
#include "quant/quantize_pipeline.h"

namespace {

class FakeGpuAccelerator : public mq::quant::CpuQuantAccelerator {
 public:
  std::string name() const override { return "cuda (fake GPU)"; }
};

mq::Status Probe(mq::serve::DeviceDescription* d) {
  d->device = "cuda";
  d->name = "Fake GPU";
  d->total_bytes = d->free_bytes = uint64_t{1} << 30;
  return mq::OkStatus();
}

mq::StatusOr<std::unique_ptr<mq::serve::SequenceBackend>> OpenModel(const std::string&,
                                                                    const mq::serve::SequenceBackendOptions&) {
  return mq::UnimplementedError("the fake GPU plugin serves no models");
}

mq::StatusOr<std::unique_ptr<mq::quant::QuantAccelerator>> OpenQuant(const mq::quant::QuantizeOptions& o,
                                                                     std::string* why_not) {
  if (o.act_granularity == "per_tensor") {
    if (why_not != nullptr) *why_not = "fake GPU: static activation scales are not supported";
    return std::unique_ptr<mq::quant::QuantAccelerator>();
  }
  return std::unique_ptr<mq::quant::QuantAccelerator>(new FakeGpuAccelerator());
}

uint64_t DeviceMemoryUsed() { return 0; }

const mq::serve::BackendPlugin kTable{mq::serve::kBackendPluginAbiVersion, &Probe, &OpenModel, &OpenQuant,
                                      &DeviceMemoryUsed, /*open_classifier=*/nullptr};

}  // namespace

extern "C" __attribute__((visibility("default"))) const mq::serve::BackendPlugin* mq_backend_plugin() {
  return &kTable;
}

#else

extern "C" __attribute__((visibility("default"))) const mq::serve::BackendPlugin* mq_backend_plugin() {
  static const mq::serve::BackendPlugin table = [] {
    mq::serve::BackendPlugin t;
    t.abi_version = mq::serve::kBackendPluginAbiVersion + 1000;
    return t;
  }();
  return &table;
}

#endif
