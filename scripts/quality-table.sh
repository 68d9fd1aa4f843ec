#!/usr/bin/env bash
# The quality table of docs/quantization.md: every preset x {w8a8, w4a8} x {linear, full}, seeds
# 0 and 1, and the cumulative mambaquant ablation, on mamba-small ("plain") and on its outlier
# variant made by `mq-engine transform --outliers default --seed 0` ("outlier").
#   scripts/quality-table.sh [plain|outlier|all]      (default all)
# Knobs: MODEL (default ../shared/fixtures/models/mamba-small), BIN (default
# build/worker/engine/mq-engine), DOCS (default docs), SEEDS (default 0,1), TEXT (default models/text),
# SAMPLES (calibration windows, default 128), EVAL_WINDOWS (0 = all of eval.txt), ABLATION_PLAIN and
# ABLATION_OUTLIER (all|none|w8a8|w4a8, default all).
# Writes $DOCS/quality-mamba-small.{md,json} (plain) and $DOCS/quality-mamba-small-outlier.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH="${1:-all}"
MODEL="${MODEL:-../shared/fixtures/models/mamba-small}"
BIN="${BIN:-build/worker/engine/mq-engine}"
DOCS="${DOCS:-docs}"
SEEDS="${SEEDS:-0,1}"
TEXT="${TEXT:-models/text}"
SAMPLES="${SAMPLES:-128}"
EVAL_WINDOWS="${EVAL_WINDOWS:-0}"
case "$WHICH" in plain|outlier|all) ;; *) echo "usage: $0 [plain|outlier|all]" >&2; exit 2 ;; esac
table() {  # table LABEL MODEL_DIR OUT_STEM ABLATION
  "$BIN" quality-table --model "$2" --label "$1" --calib "$TEXT/calib.txt" --eval "$TEXT/eval.txt" \
    --samples "$SAMPLES" --seq-len 256 --seeds "$SEEDS" --eval-windows "$EVAL_WINDOWS" --ablation "$4" \
    --out-md "$DOCS/$3.md" --out-json "$DOCS/$3.json"
}
if [ "$WHICH" != outlier ]; then table plain "$MODEL" quality-mamba-small "${ABLATION_PLAIN:-all}"; fi
if [ "$WHICH" != plain ]; then
  VARIANT="$(mktemp -d)/mamba-small-outlier"
  trap 'rm -rf "$(dirname "$VARIANT")"' EXIT
  "$BIN" transform --model "$MODEL" --out "$VARIANT" --outliers default --seed 0
  table outlier "$VARIANT" quality-mamba-small-outlier "${ABLATION_OUTLIER:-all}"
fi
