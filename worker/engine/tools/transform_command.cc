// mq-engine transform: a function-preserving outlier variant of a float model
// (model/outlier_transform.h), written in the Hugging Face layout with outliers.json beside it
// saying which channels of which layer and site were scaled by what.
#include <cstdio>

#include "model/hf_model_writer.h"
#include "model/outlier_transform.h"
#include "tools/command_line.h"
#include "tools/commands.h"

namespace mq::tools {

int RunTransformCommand(const std::vector<std::string>& args) {
  auto cl = CommandLine::Parse(args, {}, {"model", "out", "outliers", "seed"});
  if (!cl.ok()) return ReportError(cl.status());
  auto model = cl->Require("model");
  auto out = cl->Require("out");
  auto outliers = cl->Require("outliers");
  auto seed = cl->GetInt("seed", 0, 0, INT64_MAX);
  for (const Status& s : {model.status(), out.status(), outliers.status(), seed.status()})
    if (!s.ok()) return ReportError(s);
  auto spec = OutlierSpec::Parse(*outliers, static_cast<uint64_t>(*seed));
  if (!spec.ok()) return ReportError(spec.status());
  auto w = LoadMambaWeights(*model);
  if (!w.ok()) return ReportError(w.status());
  auto applied = ApplyOutliers(*w, *spec);
  if (!applied.ok()) return ReportError(applied.status());
  (*applied)["source"] = *model;
  const Status s = WriteFloatHfModel(*w, *model, *out, {{"outliers.json", applied->dump(2) + "\n"}});
  if (!s.ok()) return ReportError(s);
  std::printf("transform: %s -> %s with outliers %s (seed %lld)\n", model->c_str(), out->c_str(),
              spec->ToString().c_str(), static_cast<long long>(*seed));
  return 0;
}

}  // namespace mq::tools
