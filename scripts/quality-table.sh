#!/usr/bin/env bash
# The quality table of docs/quantization.md: every preset x {w8a8, w4a8} x {linear, full}, seeds
# 0 and 1, and the cumulative mambaquant ablation, on mamba-small ("plain") and on its outlier
# variant made by `mq-engine transform --outliers default --seed 0` ("outlier").
#   scripts/quality-table.sh [plain|outlier|all]      (default all)
# Knobs: MODEL (default ../shared/fixtures/models/mamba-small), BIN (default
# build/worker/engine/mq-engine), DOCS (default docs), SEEDS (default 0,1), TEXT (default models/text).
# Writes $DOCS/quality-mamba-small.{md,json} (plain) and $DOCS/quality-mamba-small-outlier.{md,json}.
set -euo pipefail
cd "$(dirname "$0")/.."
WHICH="${1:-all}"
MODEL="${MODEL:-../shared/fixtures/models/mamba-small}"
BIN="${BIN:-build/worker/engine/mq-engine}"
DOCS="${DOCS:-docs}"
SEEDS="${SEEDS:-0,1}"
TEXT="${TEXT:-models/text}"
case "$WHICH" in plain|outlier|all) ;; *) echo "usage: $0 [plain|outlier|all]" >&2; exit 2 ;; esac
table() {  # table LABEL MODEL_DIR OUT_STEM
  "$BIN" quality-table --model "$2" --label "$1" --calib "$TEXT/calib.txt" --eval "$TEXT/eval.txt" \
    --samples 128 --seq-len 256 --seeds "$SEEDS" --out-md "$DOCS/$3.md" --out-json "$DOCS/$3.json"
}
if [ "$WHICH" != outlier ]; then table plain "$MODEL" quality-mamba-small; fi
if [ "$WHICH" != plain ]; then
  VARIANT="$(mktemp -d)/mamba-small-outlier"
  trap 'rm -rf "$(dirname "$VARIANT")"' EXIT
  "$BIN" transform --model "$MODEL" --out "$VARIANT" --outliers default --seed 0
  table outlier "$VARIANT" quality-mamba-small-outlier
fi
