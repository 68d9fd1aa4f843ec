// A backend plugin of another ABI version, for backend_plugin_test: the loader must refuse it.
#include "serve/backend_plugin.h"

extern "C" __attribute__((visibility("default"))) const mq::serve::BackendPlugin* mq_backend_plugin() {
  static const mq::serve::BackendPlugin table = [] {
    mq::serve::BackendPlugin t;
    t.abi_version = mq::serve::kBackendPluginAbiVersion + 1000;
    return t;
  }();
  return &table;
}
