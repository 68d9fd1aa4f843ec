// The small, fast quantization job on the bundled mamba-tiny that the export, int4 and CUDA tests
// build their models from: 8 calibration windows of 64 tokens of models/text/calib.txt.
#pragma once

#include <string>

#include "quant/quantize_pipeline.h"
#include "test_paths.h"

namespace mq::testing {

inline quant::QuantizeOptions TinyQuantOptions(const std::string& bits) {
  quant::QuantizeOptions o;
  o.model_dir = RepoPath("models/mamba-tiny");
  o.calib_text_path = RepoPath("models/text/calib.txt");
  o.bits = bits;
  o.num_samples = 8;
  o.seq_len = 64;
  return o;
}

}  // namespace mq::testing
