// The engine's quantization stages as the job protocol names them: the one mapping that every
// job executor (Mamba and Vision Mamba) reports progress through.
#pragma once

#include "mambaquant/v1/common.pb.h"
#include "quant/quantize_pipeline.h"

namespace mq::worker {

inline mambaquant::v1::Stage ToProtoStage(quant::Stage stage) {
  switch (stage) {
    case quant::Stage::kLoad: return mambaquant::v1::STAGE_LOAD;
    case quant::Stage::kCalibrate: return mambaquant::v1::STAGE_CALIBRATE;
    case quant::Stage::kTransform: return mambaquant::v1::STAGE_TRANSFORM;
    case quant::Stage::kQuantize: return mambaquant::v1::STAGE_QUANTIZE;
    case quant::Stage::kEvaluate: return mambaquant::v1::STAGE_EVALUATE;
    case quant::Stage::kExport: return mambaquant::v1::STAGE_EXPORT;
  }
  return mambaquant::v1::STAGE_UNSPECIFIED;
}

}  // namespace mq::worker
