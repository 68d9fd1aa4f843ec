// mq-engine: the engine's command-line tool (evaluate, generate, tokenize, quantize, make-model).
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "tools/commands.h"

namespace {

constexpr const char* kUsage = R"(usage: mq-engine COMMAND [options]

commands:
  eval      --model DIR --text FILE [--window 256] [--max-windows N] [--json]
            [--decode-steps [--state-dtype fp32|fp16|bf16|int8] [--device cpu|cuda] [--batch 8]]
            perplexity by the fixtures' protocol (documents split on blank lines, eos after each,
            non-overlapping windows); --decode-steps feeds every token as one decode step through
            the serving backend, storing the state in --state-dtype after each
  generate  --model DIR --prompt TEXT [--max-tokens 32] [--temperature 0] [--top-k 0] [--top-p 1]
            [--seed 0] [--device cpu|cuda] [--state-dtype fp32|fp16|bf16|int8] [--json]
            continuation (greedy at temperature 0, else sampled, reproducible from the seed), stops at eos
  tokenize  --model DIR (--text TEXT | --file FILE) [--json]
  tokenize  --model DIR --decode IDS [--json]       IDS: comma or space separated token ids
  quantize  --model DIR --preset P --bits w8a8|w4a8 --scope linear|full --calib FILE
            [--samples 128] [--seq-len 256] [--seed 0] --out DIR [--eval FILE] [--json]
            [--act per_token|per_tensor] [--act-percentile 99.9] [--smooth-alpha 0.5] [--no-klt-r1] [--no-klt-r5]
            [--no-smooth-s5] [--no-online-r2] [--no-smooth-s2] [--no-smooth-s4] [--no-smooth-conv] [--r1-layer0] [--quantize-lm-head] [--diagnostics]
            [--tolerable-loss PCT]   score configurations by inference-cost tier on held-out calibration text; keep the
                                     lowest-loss one within PCT of the cheapest tier that has one; w4a8 that
                                     none meets: the fewest most sensitive layers at 8-bit weights
            [--w8-layers L,L,...]    w4a8 mixed precision: these layers keep 8-bit weights
            [--device auto|cpu|cuda]   auto: the GPU when present and able to run the job, else the CPU
  quantize  --model VIM_DIR --preset P --bits w8a8|w4a8 --calib IMAGES [--calib-prefix P] [--samples 0]
            [--seed 0] --out DIR [--eval IMAGES] [--eval-prefix P] [--act per_token|per_tensor] [...]
            a Vim model (config.json model_type "vim"): calibration and evaluation on image sets;
            the report gives float and quantized top-1 accuracy, agreement and KL
  quality-table --model DIR --calib FILE --eval FILE [--samples 128] [--seq-len 256]
            [--seeds 0,1] [--label NAME] [--ablation all|none|w8a8|w4a8] [--eval-windows N]
            [--out-md FILE] [--out-json FILE]
            every preset x bits x scope, extra seeds, the mambaquant ablation, in one eval pass
            (scripts/quality-table.sh runs it on a model and its outlier variant)
  make-model --shape 130m|370m|790m|1.4b|2.8b|tiny --out DIR --tokenizer-from MODEL_DIR [--seed 0]
            [--dtype f16|f32] [--layers N] [--threads N]
            a Hugging Face Mamba-1 model directory with random weights of a real shape (for timing)
  make-model --shape vim-tiny|vim-small|vim-base --out DIR [--seed 0] [--dtype f32|f16] [--layers N]
            a Vision Mamba directory (official key names, 224/16 geometry) with random weights
  classify  --model DIR --images FILE [--prefix P] [--device cpu|cuda] [--threads N] [--json]
            top-1 classes of a Vim model (float or quantized) on FILE's `{P}images` F32 [B,C,H,W]
            (normalized), and `accuracy` when FILE has `{P}labels` I64 [B]
  transform --model DIR --out DIR --outliers SPEC|default [--seed 0]
            a function-preserving outlier variant: SPEC = site:COUNTxFACTOR,... with sites
            norm (gamma / in_proj columns), conv (in_proj x rows / conv1d), dt (x_proj delta rows /
            dt_proj columns), state (x_proj B rows / C rows); default = norm:2x60,conv:2x40,dt:1x50,state:2x30
)";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string command = argv[1];
  std::vector<std::string> args(argv + 2, argv + argc);
  if (command == "eval") return mq::tools::RunEvalCommand(args);
  if (command == "generate") return mq::tools::RunGenerateCommand(args);
  if (command == "tokenize") return mq::tools::RunTokenizeCommand(args);
  if (command == "quantize") return mq::tools::RunQuantizeCommand(args);
  if (command == "quality-table") return mq::tools::RunQualityTableCommand(args);
  if (command == "make-model") return mq::tools::RunMakeModelCommand(args);
  if (command == "classify") return mq::tools::RunClassifyCommand(args);
  if (command == "transform") return mq::tools::RunTransformCommand(args);
  std::fprintf(stderr, "mq-engine: unknown command \"%s\"\n%s", command.c_str(), kUsage);
  return 2;
}
